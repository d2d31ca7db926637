"""Managing inbound hooks through the API and Django admin: the organization's admins
only, the secret shown once, every change in the pipeline's audit chain."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from inbound import services as inbound
from inbound.models import InboundDelivery, InboundHook
from pipelines.errors import InvalidInput, PermissionDenied
from pipelines.models import AuditEntry, Pipeline, SecurityEvent
from tests.inbound.conftest import MAPPING, Sender
from tokens.services import token_create
from webhooks import crypto

URL = "/api/v1/pipelines/payment/hooks/"


def api(user: Any) -> APIClient:
    client = APIClient()
    _, key = token_create(user=user, name="tests")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def pipeline_events() -> list[str]:
    pipeline = Pipeline.objects.get(name="payment")
    entries = AuditEntry.objects.filter(pipeline=pipeline, run__isnull=True).order_by("seq")
    return [e.event for e in entries]


def test_an_admin_creates_a_hook_and_sees_its_secret_once(users, payment):
    client = api(users["boss"])
    created = client.post(
        URL,
        {"name": "payments", "input_mapping": MAPPING, "delivery_id_header": "X-Delivery"},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    hook = InboundHook.objects.get(pk=body["id"])
    assert body["url"] == f"http://testserver/hooks/{hook.token}/"
    assert body["secret"] == crypto.decrypt(hook.secret_encrypted)
    assert body["secret"] not in hook.secret_encrypted
    assert hook.created_by == users["boss"]

    listed = client.get(URL).json()
    shown = client.get(f"{URL}{hook.pk}/").json()
    for answer in (listed, shown):
        assert body["secret"] not in str(answer)
    assert [h["name"] for h in listed["results"]] == ["payments"]
    assert shown["input_mapping"] == MAPPING

    # The secret works as given.
    assert Sender(hook, body["secret"]).post().status_code == 202

    rotated = client.post(f"{URL}{hook.pk}/rotate/")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] not in (body["secret"], "")
    assert client.delete(f"{URL}{hook.pk}/").status_code == 204
    assert not InboundHook.objects.exists()
    assert not InboundDelivery.objects.exists()
    assert Sender(hook, rotated.json()["secret"]).post(delivery="d-2").status_code == 404
    assert pipeline_events()[-3:] == [
        "inbound_hook.created",
        "inbound_hook.secret_rotated",
        "inbound_hook.deleted",
    ]
    assert all(body["secret"] not in str(e.data) for e in AuditEntry.objects.all())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_mapping", {"amount": "data.[amount"}),
        ("rate_limit", "lots"),
        ("signature_header", "X Bad Header"),
        ("delivery_id_path", "id[?"),
        ("max_body_bytes", 100 * 1024 * 1024),
        ("signature_format", "md5"),
    ],
)
def test_a_bad_setting_is_a_400_naming_the_field(users, payment, field, value):
    response = api(users["boss"]).post(URL, {"name": "x", field: value}, format="json")
    assert response.status_code == 400, response.content
    assert field in str(response.json()["error"])
    assert not InboundHook.objects.exists()


def test_both_delivery_id_sources_at_once_are_refused(payment):
    with pytest.raises(InvalidInput, match=r"delivery_id_header.*delivery_id_path.*not both"):
        inbound.hook_create(
            pipeline="payment", name="x", delivery_id_header="X-Id", delivery_id_path="id"
        )


def test_a_member_who_is_not_an_admin_manages_nothing(users, hook):
    client = api(users["starter"])  # may even start the pipeline's runs
    Pipeline.objects.filter(name="payment").update(member_role="starter")
    assert client.get(URL).json()["results"] == []
    assert client.get(f"{URL}{hook.pk}/").status_code == 404
    created = client.post(URL, {"name": "sneaky"}, format="json")
    rotated = client.post(f"{URL}{hook.pk}/rotate/")
    deleted = client.delete(f"{URL}{hook.pk}/")
    assert (created.status_code, rotated.status_code, deleted.status_code) == (403, 403, 403)
    for answer in (created, rotated, deleted):
        assert "secret" not in answer.json()
    assert list(InboundHook.objects.values_list("name", flat=True)) == ["payments"]
    refusals = SecurityEvent.objects.filter(event="inbound_hook.refused", actor=users["starter"])
    assert sorted(e.data["action"] for e in refusals) == ["create", "delete", "rotate"]
    assert crypto.decrypt(InboundHook.objects.get().secret_encrypted) == hook.new_secret


def test_admin_adds_a_hook_shows_the_url_and_secret_once_and_rotates(admin_client, payment):
    pipeline = Pipeline.objects.get(name="payment")
    added = admin_client.post(
        reverse("admin:inbound_inboundhook_add"),
        {
            "organization": pipeline.organization_id,
            "pipeline": pipeline.pk,
            "name": "forms",
            "signature_format": "hmac-sha256",
            "signature_header": "X-Hub-Signature-256",
            "replay_window_s": 300,
            "max_body_bytes": 4096,
            "input_mapping": '{"payee": "form.name", "amount": "form.amount"}',
            "delivery_id_header": "",
            "delivery_id_path": "",
            "rate_limit": "10/minute",
            "enabled": "on",
        },
    )
    assert added.status_code == 200, added.content
    hook = InboundHook.objects.get()
    secret = crypto.decrypt(hook.secret_encrypted)
    page = added.content.decode()
    assert secret in page
    assert f"/hooks/{hook.token}/" in page
    change = admin_client.get(reverse("admin:inbound_inboundhook_change", args=[hook.pk]))
    assert secret not in change.content.decode()
    assert f"/hooks/{hook.token}/" in change.content.decode()

    rotated = admin_client.post(
        reverse("admin:inbound_inboundhook_changelist"),
        {"action": "rotate_secret", "_selected_action": [hook.pk]},
    )
    new = crypto.decrypt(InboundHook.objects.get().secret_encrypted)
    assert new != secret
    assert new in rotated.content.decode()
    assert "inbound_hook.created" in pipeline_events()


def test_admin_shows_every_delivery_read_only(admin_client, hook, sender):
    sender.post()
    sender.post()
    Sender(hook, "forged-forged-forged").post(delivery="x")
    page = admin_client.get(reverse("admin:inbound_inbounddelivery_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    for outcome in ("accepted", "duplicate", "refused"):
        assert outcome in text
    delivery = InboundDelivery.objects.first()
    change = reverse("admin:inbound_inbounddelivery_change", args=[delivery.pk])
    assert 'name="_save"' not in admin_client.get(change).content.decode()
    assert admin_client.post(change, {"reason": "edited"}).status_code == 403


def test_admin_changes_go_through_the_service_and_its_audit(admin_client, hook, sender):
    change = reverse("admin:inbound_inboundhook_change", args=[hook.pk])
    form = admin_client.get(change).context["adminform"].form
    data = {name: form.initial.get(name) for name in inbound.SETTABLE}
    data.update(input_mapping='{"amount": "data.amount", "payee": "data.payee.name"}')
    data.pop("enabled")  # unchecked: disabled
    saved = admin_client.post(change, {k: v for k, v in data.items() if v is not None})
    assert saved.status_code == 302, saved.content
    assert InboundHook.objects.get().enabled is False
    assert pipeline_events()[-1] == "inbound_hook.changed"
    assert sender.post().status_code == 404


def test_a_member_cannot_change_a_hook_through_the_service(users, hook):
    with pytest.raises(PermissionDenied):
        inbound.hook_update(hook_id=hook.pk, actor=users["starter"], enabled=False)
    assert InboundHook.objects.get().enabled is True
    assert SecurityEvent.objects.filter(
        event="inbound_hook.refused", actor=users["starter"], data__action="update"
    ).exists()
