"""Read queries of the webhooks app."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from webhooks.models import Webhook, WebhookDelivery


def webhook_list(organization: Any) -> QuerySet[Webhook]:
    """The organization's webhooks (its admins manage them)."""
    return (
        Webhook.objects.filter(organization_id=getattr(organization, "pk", organization))
        .select_related("created_by")
        .order_by("-created_at", "-id")
    )


def run_pending_deliveries(run_id: int) -> list[dict[str, Any]]:
    """Webhook deliveries about a run still waiting to be sent (its unsettled work)."""
    rows = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, payload__run=run_id
    ).values("id", "event", "webhook_id", "attempts")
    return [dict(row) for row in rows]
