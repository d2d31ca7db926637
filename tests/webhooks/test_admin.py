"""Webhooks in Django admin: edits through the services, the secret never a form field."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from tests.webhooks.conftest import stored_secret
from webhooks import crypto, services
from webhooks.models import Webhook

pytestmark = pytest.mark.django_db

URL = "http://127.0.0.1:9/hook"


def test_adding_a_webhook_shows_its_generated_secret_once(hook_settings, admin_client):
    added = admin_client.post(
        reverse("admin:webhooks_webhook_add"),
        {"url": URL, "events": ["run.finished"], "active": "on", "secret": "chosen-by-hand"},
    )

    assert added.status_code == 200, added.content
    hook = Webhook.objects.get()
    assert (hook.url, hook.events, hook.created_by.username) == (URL, ["run.finished"], "admin")
    secret = stored_secret(hook)
    assert secret != "chosen-by-hand"
    assert len(secret) >= 32
    assert secret in added.content.decode()
    change = admin_client.get(reverse("admin:webhooks_webhook_change", args=[hook.pk]))
    assert secret not in change.content.decode()
    assert secret[-4:] not in change.content.decode()
    assert hook.secret_encrypted not in change.content.decode()


def test_a_change_keeps_the_secret_whatever_is_posted(hook_settings, admin_client):
    hook = services.webhook_create(url=URL, events=["run.finished"])
    change = reverse("admin:webhooks_webhook_change", args=[hook.pk])
    assert 'name="secret"' not in admin_client.get(change).content.decode()

    saved = admin_client.post(
        change, {"url": f"{URL}/v2", "events": ["task.opened"], "secret": "mine"}
    )

    assert saved.status_code == 302
    moved = Webhook.objects.get()
    assert (moved.url, moved.events, moved.active) == (f"{URL}/v2", ["task.opened"], False)
    assert stored_secret(moved) == hook.new_secret


def test_rotating_secrets_shows_the_new_ones_once(hook_settings, admin_client):
    first = services.webhook_create(url=URL, events=["run.finished"])
    second = services.webhook_create(url=URL, events=["task.opened"])

    rotated = admin_client.post(
        reverse("admin:webhooks_webhook_changelist"),
        {"action": "rotate_secret", "_selected_action": [first.pk, second.pk]},
    )

    assert rotated.status_code == 200
    page = rotated.content.decode()
    for old in (first, second):
        new = stored_secret(old)
        assert new != old.new_secret
        assert new in page
        assert old.new_secret not in page
        # Afterwards neither the new secret nor the one still in its grace period shows.
        change = admin_client.get(reverse("admin:webhooks_webhook_change", args=[old.pk]))
        assert change.status_code == 200
        assert new not in change.content.decode()
        assert old.new_secret not in change.content.decode()
        assert "previous secret also signs until" in change.content.decode()
    listed = admin_client.get(reverse("admin:webhooks_webhook_changelist")).content.decode()
    assert stored_secret(first) not in listed
    assert stored_secret(second) not in listed
    assert LogEntry.objects.filter(change_message="Rotated the secret.").count() == 2


def test_the_rotate_service_keeps_everything_else(hook_settings):
    hook = services.webhook_create(url=URL, events=["run.finished"], secret="s" * 32)

    rotated = services.webhook_secret_rotate(webhook_id=hook.pk)

    assert rotated.new_secret != "s" * 32
    assert len(rotated.new_secret) >= 32
    stored = Webhook.objects.get()
    assert (stored_secret(stored), stored.url, stored.events) == (
        rotated.new_secret,
        URL,
        ["run.finished"],
    )
    assert crypto.decrypt(stored.previous_secret_encrypted) == "s" * 32
