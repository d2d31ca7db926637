"""Read queries of the organization pages: members, pipelines with their grants."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from orgs.models import Membership
from pipelines.models import Pipeline, PipelineGrant


def members(organization: Any) -> QuerySet[Membership]:
    """The organization's members by username (for its admins)."""
    return (
        Membership.objects.filter(organization_id=getattr(organization, "pk", organization))
        .select_related("user")
        .order_by("user__username")
    )


def memberships_of(user: Any) -> QuerySet[Membership]:
    """The user's own memberships, every organization, by organization name."""
    return (
        Membership.objects.filter(user=user)
        .select_related("organization")
        .order_by("organization__name")
    )


def pipelines_with_grants(organization: Any) -> QuerySet[Pipeline]:
    """Every pipeline of the organization with its grants (two queries in all)."""
    grants = PipelineGrant.objects.select_related("user", "group").order_by("id")
    return (
        Pipeline.objects.filter(organization_id=getattr(organization, "pk", organization))
        .select_related("created_by")
        .prefetch_related(Prefetch("grants", queryset=grants))
        .order_by("name")
    )
