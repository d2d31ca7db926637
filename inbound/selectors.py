"""Read queries of the inbound hooks: only an organization's admins see its hooks."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from inbound.models import InboundDelivery, InboundHook
from inbound.services import may_manage


def hooks_of(user: Any, organization: Any, pipeline: str) -> QuerySet[InboundHook]:
    """A pipeline's hooks in the organization, for who may manage them; else none."""
    org_id = getattr(organization, "pk", organization)
    if org_id is None or user is None or not may_manage(user, org_id):
        return InboundHook.objects.none()
    return (
        InboundHook.objects.filter(organization_id=org_id, pipeline__name=pipeline)
        .select_related("pipeline", "created_by")
        .order_by("name", "id")
    )


def recent_deliveries(hook: InboundHook, limit: int = 20) -> list[InboundDelivery]:
    return list(hook.deliveries.order_by("-received_at", "-id")[:limit])
