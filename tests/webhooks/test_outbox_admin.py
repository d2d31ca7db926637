"""The outbox in Django admin: read-only, held to the organizations staff administer, and a
"relay now" that relays through the outbox service."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from orgs.models import Membership, Organization
from pipelines import services as pipelines
from pipelines.models import OutboxEvent
from webhooks import services as webhooks
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:pipelines_outboxevent_changelist")


@pytest.fixture
def world(hook_settings: Any, django_user_model: Any, monkeypatch: Any) -> dict[str, Any]:
    """Acme (staff admin alice) and Globex, each with a run.finished event no relay took."""
    monkeypatch.setattr(webhooks, "enqueue", lambda delivery_id, attempt=1: None)
    made: dict[str, Any] = {}
    for slug in ("acme", "globex"):
        org = Organization.objects.create(slug=slug, name=slug.title())
        webhooks.webhook_create(
            url="http://127.0.0.1:9/hook", events=["run.finished"], organization=org
        )
        spec = {"name": f"{slug}-flow", "steps": [{"name": "s", "type": "noop"}]}
        pipelines.pipeline_create(spec=spec, organization=org, member_role="viewer")
        run = pipelines.run_start(pipeline=f"{slug}-flow", inputs={}, organization=org)
        pipelines.run_cancel(run_id=run.pk)
        made[slug] = OutboxEvent.objects.get(organization=org)
    alice = django_user_model.objects.create_user("alice", password="x", is_staff=True)
    Membership.objects.create(user=alice, organization=made["acme"].organization, role="admin")
    alice.user_permissions.add(Permission.objects.get(codename="view_outboxevent"))
    made["alice"] = Client()
    made["alice"].force_login(alice)
    return made


def relay(client: Client, *events: OutboxEvent) -> Any:
    return client.post(
        CHANGELIST,
        {"action": "relay_now", "_selected_action": [e.pk for e in events]},
        follow=True,
    )


def test_staff_see_only_their_organizations_events(world):
    listing = world["alice"].get(CHANGELIST)
    assert listing.status_code == 200
    shown = [e.pk for e in listing.context["cl"].result_list]
    assert shown == [world["acme"].pk]
    other = reverse("admin:pipelines_outboxevent_change", args=[world["globex"].pk])
    assert world["alice"].get(other).status_code in (302, 404)


def test_relay_now_relays_the_selected_events_of_the_users_organizations_only(world):
    acme, globex = world["acme"], world["globex"]

    page = relay(world["alice"], acme, globex)

    assert "Relayed 1 of 1 selected events." in page.content.decode()
    acme.refresh_from_db()
    globex.refresh_from_db()
    assert acme.relayed_at is not None
    assert globex.relayed_at is None
    deliveries = WebhookDelivery.objects.values_list("organization__slug", "event")
    assert list(deliveries) == [("acme", "run.finished")]

    # Again: nothing is relayed twice.
    page = relay(world["alice"], acme)
    assert "Relayed 0 of 1 selected events (1 had been relayed already)." in page.content.decode()
    assert WebhookDelivery.objects.count() == 1


def test_superusers_relay_any_organizations_events(world, admin_client):
    page = relay(admin_client, world["acme"], world["globex"])
    assert "Relayed 2 of 2 selected events." in page.content.decode()
    assert not OutboxEvent.objects.filter(relayed_at__isnull=True).exists()


def test_nobody_adds_changes_or_deletes_events(world, admin_client):
    event = world["acme"]
    change = reverse("admin:pipelines_outboxevent_change", args=[event.pk])
    assert admin_client.get(reverse("admin:pipelines_outboxevent_add")).status_code == 403
    admin_client.post(change, {"event": "run.failed", "attempts": 9})
    deleted = admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"}
    )
    assert deleted.status_code in (200, 302)
    kept = OutboxEvent.objects.get(pk=event.pk)
    assert (kept.event, kept.attempts, kept.relayed_at) == ("run.finished", 0, None)
    page = admin_client.get(change).content.decode()
    assert 'name="_save"' not in page
