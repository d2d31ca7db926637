"""The header's organization: the current one for everyone, the switcher's choices."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from orgs import selectors as orgs


def organizations(request: HttpRequest) -> dict[str, Any]:
    """`current_organization`, and `switch_organizations` when there is a choice."""
    user = getattr(request, "user", None)
    current = getattr(request, "organization", None)
    if current is None or user is None or not user.is_authenticated:
        return {"current_organization": current, "switch_organizations": []}
    choices = orgs.organizations_of(user)
    return {
        "current_organization": current,
        "switch_organizations": choices if len(choices) > 1 else [],
    }
