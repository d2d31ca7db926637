"""Accepted deliveries: a run started once per delivery, with mapped and validated inputs,
recorded with the run and named as its starter in the audit trail."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client

from inbound import services as inbound
from inbound.models import InboundDelivery
from pipelines.models import AuditEntry, Run
from tests.conftest import wait_finished
from tests.inbound.conftest import Sender, payment_body, refused, runs
from tests.races import chain_is_intact, race, verify_audit
from webhooks.services import sign


def test_a_signed_delivery_starts_a_run_with_the_mapped_inputs(hook, sender):
    response = sender.post(payment_body(amount=99, payee="Initech", ref="inv-7"))
    assert response.status_code == 202
    body = response.json()
    run = Run.objects.get(pk=body["run"])
    assert body["url"] == f"http://testserver/api/v1/runs/{run.pk}/"
    assert run.inputs == {"amount": 99, "payee": "Initech", "reference": "inv-7"}
    assert run.created_by is None
    assert run.organization_id == hook.organization_id
    # Its first step was queued by the delivery's own transaction.
    assert run.status == "running"
    assert run.steps.get(step_name="check").status == "queued"
    assert run.steps.get(step_name="pay").status == "pending"
    [delivery] = InboundDelivery.objects.filter(hook=hook)
    assert (delivery.outcome, delivery.http_status, delivery.run_id) == ("accepted", 202, run.pk)
    assert delivery.delivery_id == "d-1"
    assert len(delivery.body_sha256) == 64
    created = AuditEntry.objects.get(run=run, event="run.created")
    assert created.data["trigger"] == {
        "type": "inbound_hook",
        "hook": hook.pk,
        "name": "payments",
        "delivery_id": "d-1",
    }
    assert chain_is_intact(run)


def test_the_same_delivery_twice_starts_one_run_and_both_answers_name_it(hook, sender):
    first = sender.post(delivery="evt-42")
    second = sender.post(delivery="evt-42")
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["run"] == second.json()["run"]
    assert second.json()["duplicate"] is True
    assert runs() == 1
    outcomes = list(
        InboundDelivery.objects.filter(hook=hook).order_by("pk").values_list("outcome", "run_id")
    )
    run_id = first.json()["run"]
    assert outcomes == [("accepted", run_id), ("duplicate", run_id)]
    # Another delivery id is another run.
    assert sender.post(delivery="evt-43").status_code == 202
    assert runs() == 2


def test_without_a_delivery_id_source_the_body_names_the_delivery(make_hook):
    hook = make_hook(delivery_id_header="")
    sender = Sender(hook, hook.new_secret)
    assert sender.post(payment_body(ref="a"), delivery=None).status_code == 202
    assert sender.post(payment_body(ref="a"), delivery=None).status_code == 200
    assert sender.post(payment_body(ref="b"), delivery=None).status_code == 202
    assert runs() == 2
    ids = set(InboundDelivery.objects.values_list("delivery_id", flat=True))
    assert all(i.startswith("sha256:") for i in ids)
    assert len(ids) == 2


def test_the_delivery_id_can_come_from_the_body(make_hook):
    hook = make_hook(delivery_id_header="", delivery_id_path="id")
    sender = Sender(hook, hook.new_secret)
    assert sender.post(payment_body(id="pay_1"), delivery=None).status_code == 202
    assert sender.post(payment_body(id="pay_1", ref="changed"), delivery=None).status_code == 200
    missing = sender.post(payment_body(), delivery=None)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "no_delivery_id"
    assert runs() == 1


def test_a_missing_delivery_id_header_is_a_400(hook, sender):
    response = sender.post(delivery=None)
    assert response.status_code == 400
    assert "X-Delivery" in response.json()["error"]["message"]
    assert runs() == 0
    assert len(refused(hook)) == 1


def test_a_mapping_that_fails_is_a_400_naming_the_input_and_expression(make_hook):
    hook = make_hook(input_mapping={"amount": "abs(data.payee.name)", "payee": "data.payee.name"})
    sender = Sender(hook, hook.new_secret)
    response = sender.post()
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "mapping_failed"
    assert "'amount'" in error["message"]
    assert "abs(data.payee.name)" in error["message"]
    assert error["details"][0]["field"] == "amount"
    assert error["details"][0]["expression"] == "abs(data.payee.name)"
    assert runs() == 0
    assert [status for status, _ in refused(hook)] == [400]


def test_inputs_that_break_the_schema_are_a_400_with_the_apis_details(hook, sender, client):
    response = sender.post(payment_body(amount=-5, payee=""))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    fields = {d["field"] for d in error["details"]}
    assert fields == {"amount", "payee"}
    assert runs() == 0
    [(status, reason)] = refused(hook)
    assert status == 400
    assert "input_schema" in reason
    # A value the mapping does not find is left out, and the schema says it is required.
    missing = sender.post(json.dumps({"data": {"amount": 3}}).encode(), delivery="d-2")
    assert missing.status_code == 400
    assert "payee" in missing.json()["error"]["message"]


def test_a_firefly_signature_from_firefly_s_own_webhooks_is_accepted(make_hook):
    """The format is the one Firefly's outbound webhooks sign with: one Firefly can
    start another's runs."""
    hook = make_hook(signature_format="firefly", delivery_id_header="")
    body = payment_body().decode()
    stamp = int(time.time())
    headers = {
        "Firefly-Timestamp": str(stamp),
        "Firefly-Signature": sign(hook.new_secret, stamp, body),
        "Firefly-Delivery": "0b7f-uuid",
    }
    response = Client().post(hook.path, data=body, content_type="application/json", headers=headers)
    assert response.status_code == 202
    assert InboundDelivery.objects.get(outcome="accepted").delivery_id == "0b7f-uuid"


def test_a_rotated_secret_works_at_once_and_the_old_one_until_its_grace_ends(hook, settings):
    old = hook.new_secret
    rotated = inbound.hook_secret_rotate(hook_id=hook.pk)
    assert rotated.new_secret != old
    assert Sender(hook, rotated.new_secret).post(delivery="a").status_code == 202
    assert Sender(hook, old).post(delivery="b").status_code == 202
    settings.FIREFLY_INBOUND_SECRET_GRACE_S = 0
    inbound.hook_secret_rotate(hook_id=hook.pk)
    assert Sender(hook, old).post(delivery="c").status_code == 401
    assert Sender(hook, rotated.new_secret).post(delivery="d").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_two_identical_deliveries_at_once_start_one_run(make_hook):
    hook = make_hook()
    secret = hook.new_secret

    def deliver() -> Any:
        return Sender(hook, secret, Client()).post(delivery="same-delivery")

    answers = race(deliver, deliver, deliver)
    for answer in answers:
        assert not isinstance(answer, Exception), answer
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 202]
    assert len({a.json()["run"] for a in answers}) == 1
    assert runs() == 1
    assert InboundDelivery.objects.filter(outcome="accepted").count() == 1
    assert InboundDelivery.objects.filter(outcome="duplicate").count() == 2
    verify_audit()


@pytest.mark.worker
def test_a_delivery_starts_a_run_whose_steps_run_on_a_worker(worker, make_hook):
    hook = make_hook()
    response = Sender(hook, hook.new_secret).post()
    assert response.status_code == 202
    run = wait_finished(Run.objects.get(pk=response.json()["run"]))
    assert run.status == "succeeded"
    steps = set(run.steps.values_list("step_name", "status"))
    assert steps == {("check", "succeeded"), ("pay", "succeeded")}
    assert chain_is_intact(run)


def test_a_person_signed_in_to_another_organization_can_still_deliver(hook, sender, users):
    """The lookup is not held to the session's organization, and the run is the hook's."""
    from orgs.models import Membership, Organization

    other = Organization.objects.create(slug="globex", name="Globex")
    Membership.objects.filter(user=users["outsider"]).delete()
    Membership.objects.create(user=users["outsider"], organization=other, role="member")
    sender.client.force_login(users["outsider"])
    response = sender.post()
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run"])
    assert run.organization_id == hook.organization_id
    assert run.created_by is None
