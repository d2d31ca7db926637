"""Attack: cancel, resume or settle someone else's run, by page, API or the service itself."""

from __future__ import annotations

import pytest
from django.test import Client

from orgs.models import Organization
from pipelines import services
from pipelines.errors import PermissionDenied
from pipelines.models import AuditEntry, HandoffEnvelope, Pipeline, Run, SecurityEvent
from tests.api.conftest import error_of

V1 = "/api/v1"
ONLY_OPERATORS = (
    "Only the run's starter, its pipeline's operators and the organization's admins may"
)


@pytest.mark.parametrize("verb", ["cancel", "resume"])
def test_outsiders_cannot_operate_a_run(users, client_for, waiting_run, verb):
    run = waiting_run()
    revision = run.revision
    error = error_of(client_for(users["r1"]).post(f"{V1}/runs/{run.pk}/{verb}/"), 403)
    assert error["message"] == f"{ONLY_OPERATORS} {verb} it."
    page = Client()
    page.force_login(users["outsider"])
    assert page.post(f"/runs/{run.pk}/{verb}/").status_code == 403
    # Code that calls the service directly (a command, a hook) meets the same rule.
    service = services.run_cancel if verb == "cancel" else services.run_resume
    with pytest.raises(PermissionDenied):
        service(run_id=run.pk, actor=users["outsider"])

    run.refresh_from_db()
    assert run.status == "waiting"
    refusals = AuditEntry.objects.filter(run=run, event="run.refused").order_by("seq")
    assert [(r.actor_name, r.data["action"]) for r in refusals] == [
        ("r1", verb),
        ("outsider", verb),
        ("outsider", verb),
    ]
    # Only the refusals' own entries were written: nothing else about the run changed.
    assert run.revision == revision + 3
    assert not AuditEntry.objects.filter(run=run, event__in=["run.cancelled", "run.resumed"])


def test_the_starter_and_staff_may_cancel(users, client_for, waiting_run):
    mine, theirs = waiting_run(), waiting_run()
    assert client_for(users["starter"]).post(f"{V1}/runs/{mine.pk}/cancel/").status_code == 200
    assert client_for(users["boss"]).post(f"{V1}/runs/{theirs.pk}/cancel/").status_code == 200
    assert set(Run.objects.values_list("status", flat=True)) == {"cancelled"}


def test_outsiders_cannot_acknowledge_a_handoff(users, client_for, waiting_run, hand_off):
    run = waiting_run()
    envelope = hand_off(run)
    error = error_of(
        client_for(users["outsider"]).post(
            f"{V1}/handoffs/{envelope.pk}/acknowledge/", {"decision": "done"}, format="json"
        ),
        403,
    )
    assert error["message"] == f"{ONLY_OPERATORS} acknowledge its handoffs."
    with pytest.raises(PermissionDenied):
        services.acknowledge_handoff(envelope_id=envelope.pk, decision="x", actor=users["r1"])
    assert HandoffEnvelope.objects.get(pk=envelope.pk).acknowledged_at is None
    refusals = AuditEntry.objects.filter(run=run, event="run.refused")
    assert sorted(r.actor_name for r in refusals) == ["outsider", "r1"]


def test_refused_endpoints_record_who_was_refused(users, client_for):
    spec = {"name": "sneaky", "steps": [{"name": "a", "type": "noop"}]}
    response = client_for(users["outsider"]).post(f"{V1}/pipelines/", {"spec": spec}, format="json")
    error_of(response, 403)
    error_of(client_for(users["r1"]).get(f"{V1}/webhooks/"), 403)
    events = SecurityEvent.objects.order_by("id")
    assert [(e.event, e.actor_name, e.data.get("path") or e.data["pipeline"]) for e in events] == [
        ("pipeline.refused", "outsider", "sneaky"),
        ("api.forbidden", "r1", f"{V1}/webhooks/"),
    ]
    assert {e.organization for e in events} == {Organization.objects.default()}
    assert not Pipeline.objects.filter(name="sneaky").exists()
