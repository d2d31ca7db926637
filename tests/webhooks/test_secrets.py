"""Webhook secrets: encrypted at rest, shown once, both signatures while a rotation settles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from tests.webhooks.conftest import gated_run, verify
from webhooks import services as webhooks
from webhooks.models import Webhook, WebhookDelivery
from webhooks.tasks import deliver_webhook

pytestmark = pytest.mark.django_db


def raw_row(hook: Webhook) -> str:
    """Every column of the webhook's row as PostgreSQL holds it, as text."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT t::text FROM approvals_webhook t WHERE id = %s", [hook.pk])
        [row] = cursor.fetchall()
    return str(row[0])


def signatures(request: dict) -> list[str]:
    return [part.strip() for part in request["headers"]["Firefly-Signature"].split(",")]


def test_the_row_holds_no_plaintext_secret(hook_settings):
    assert connection.vendor == "postgresql"
    chosen = webhooks.webhook_create(
        url="http://127.0.0.1:9/hook", events=["run.finished"], secret="chosen-secret-" * 3
    )
    generated = webhooks.webhook_create(url="http://127.0.0.1:9/hook", events=["run.finished"])
    rotated = webhooks.webhook_secret_rotate(webhook_id=generated.pk)

    assert "chosen-secret-" not in raw_row(chosen)
    row = raw_row(generated)
    assert generated.new_secret not in row  # the previous secret, kept encrypted
    assert rotated.new_secret not in row
    assert Webhook.objects.get(pk=generated.pk).previous_secret_encrypted


def test_a_delivery_verifies_with_the_plaintext_secret(hook_settings, receive, users, offline):
    receiver = receive([200])
    hook = webhooks.webhook_create(url=receiver.url, events=["task.opened"], secret="k" * 40)
    gated_run(users, offline)

    deliver_webhook.apply(args=(offline.queued[0],))

    [request] = receiver.received
    assert len(signatures(request)) == 1
    assert verify("k" * 40, request["headers"], request["body"])
    assert not verify(hook.secret_encrypted, request["headers"], request["body"])


def test_after_a_rotation_deliveries_carry_both_signatures_until_the_grace_ends(
    hook_settings, receive, users, offline
):
    receiver = receive([200])
    hook = webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    old = hook.new_secret
    new = webhooks.webhook_secret_rotate(webhook_id=hook.pk).new_secret
    stored = Webhook.objects.get(pk=hook.pk)
    grace = stored.previous_secret_until - timezone.now()
    assert timedelta(hours=23, minutes=59) < grace <= timedelta(hours=24)

    gated_run(users, offline, name="first")
    deliver_webhook.apply(args=(offline.queued[-1],))
    [request] = receiver.received
    first, second = signatures(request)
    for secret, signature in ((new, first), (old, second)):
        assert verify(
            secret, {**request["headers"], "Firefly-Signature": signature}, request["body"]
        )

    # The grace period over: only the new secret signs.
    Webhook.objects.filter(pk=hook.pk).update(
        previous_secret_until=timezone.now() - timedelta(seconds=1)
    )
    gated_run(users, offline, name="second")
    deliver_webhook.apply(args=(offline.queued[-1],))
    later = receiver.received[-1]
    assert len(signatures(later)) == 1
    assert verify(new, later["headers"], later["body"])
    assert not verify(old, later["headers"], later["body"])


def test_the_grace_period_is_a_setting(hook_settings, receive, users, offline):
    hook_settings.FIREFLY_WEBHOOK_SECRET_GRACE_S = 0
    receiver = receive([200])
    hook = webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    new = webhooks.webhook_secret_rotate(webhook_id=hook.pk).new_secret
    gated_run(users, offline)

    deliver_webhook.apply(args=(offline.queued[-1],))

    [request] = receiver.received
    assert len(signatures(request)) == 1
    assert verify(new, request["headers"], request["body"])
    assert not verify(hook.new_secret, request["headers"], request["body"])


def test_the_api_lists_webhooks_without_any_secret(hook_settings, users):
    client = APIClient()
    client.force_authenticate(users["boss"])
    body = {"url": "http://127.0.0.1:9/hook", "events": ["run.finished"], "secret": "p" * 40}
    created = client.post("/api/v1/webhooks/", body, format="json")
    assert created.status_code == 201
    assert created.json()["secret"] == "p" * 40
    rotated = webhooks.webhook_secret_rotate(webhook_id=created.json()["id"])
    stored = Webhook.objects.get()

    listed = client.get("/api/v1/webhooks/")

    assert listed.status_code == 200
    text = listed.content.decode()
    for leak in ("p" * 40, rotated.new_secret, stored.secret_encrypted, "secret"):
        assert leak not in text
    # There is no detail endpoint: a webhook's URL answers 404, not its row.
    assert client.get(f"/api/v1/webhooks/{stored.pk}/").status_code == 404


def test_a_wrong_secrets_key_fails_the_delivery_loudly(hook_settings, receive, users, offline):
    receiver = receive([200])
    webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    gated_run(users, offline)
    hook_settings.FIREFLY_SECRETS_KEY = "another-key-that-is-long-enough-to-be-accepted"

    deliver_webhook.apply(args=(offline.queued[0],))

    assert receiver.received == []  # nothing sent, rather than a wrong signature
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert "cannot be decrypted" in delivery.last_error
    assert "FIREFLY_SECRETS_KEY" in delivery.last_error


def test_an_old_secrets_key_still_decrypts(hook_settings, receive, users, offline):
    receiver = receive([200])
    hook = webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    gated_run(users, offline)
    hook_settings.FIREFLY_SECRETS_OLD_KEYS = [hook_settings.FIREFLY_SECRETS_KEY]
    hook_settings.FIREFLY_SECRETS_KEY = "a-new-key-that-is-long-enough-to-be-accepted"

    deliver_webhook.apply(args=(offline.queued[0],))

    [request] = receiver.received
    assert verify(hook.new_secret, request["headers"], request["body"])
