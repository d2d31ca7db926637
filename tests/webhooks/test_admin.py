"""Webhooks in Django admin: edits through the services, the secret never a form field."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from webhooks import services
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
    assert hook.secret != "chosen-by-hand"
    assert len(hook.secret) >= 32
    assert hook.secret in added.content.decode()
    change = admin_client.get(reverse("admin:webhooks_webhook_change", args=[hook.pk]))
    assert hook.secret not in change.content.decode()
    assert hook.secret[-4:] in change.content.decode()  # masked, but recognisable


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
    assert moved.secret == hook.secret


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
        new = Webhook.objects.get(pk=old.pk)
        assert new.secret != old.secret
        assert new.secret in page
        assert old.secret not in page
    assert LogEntry.objects.filter(change_message="Rotated the secret.").count() == 2


def test_the_rotate_service_keeps_everything_else(hook_settings):
    hook = services.webhook_create(url=URL, events=["run.finished"], secret="s" * 32)

    rotated = services.webhook_secret_rotate(webhook_id=hook.pk)

    assert rotated.secret != "s" * 32
    assert len(rotated.secret) >= 32
    stored = Webhook.objects.get()
    assert (stored.secret, stored.url, stored.events) == (rotated.secret, URL, ["run.finished"])
