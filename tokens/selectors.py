"""Read queries of the tokens app."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from orgs import selectors as orgs
from tokens.models import ApiToken


def token_list(*, viewer: Any, organization: Any) -> QuerySet[ApiToken]:
    """The organization's tokens of the viewer; its admins see every member's."""
    org = getattr(organization, "pk", organization)
    tokens = (
        ApiToken.objects.filter(organization_id=org)
        .select_related("user", "revoked_by")
        .order_by("-created_at", "-id")
    )
    if not orgs.is_member(viewer, org):
        return tokens.none()
    if orgs.is_admin(viewer, org):
        return tokens
    return tokens.filter(user=viewer)
