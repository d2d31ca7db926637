"""Read queries of the tokens app."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from tokens.models import ApiToken


def token_list(*, viewer: Any) -> QuerySet[ApiToken]:
    """A user's own tokens; staff see everyone's."""
    tokens = ApiToken.objects.select_related("user", "revoked_by").order_by("-created_at", "-id")
    if viewer.is_staff:
        return tokens
    return tokens.filter(user=viewer)
