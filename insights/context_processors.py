"""The header's "Insights" link: shown to those who may open the page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from insights import selectors


def nav(request: HttpRequest) -> dict[str, Any]:
    """`show_insights`, read only when a page draws the nav (an admin's costs no query)."""

    def shown() -> bool:
        user = getattr(request, "user", None)
        organization = getattr(request, "organization", None)
        if user is None or organization is None or not user.is_authenticated:
            return False
        return selectors.may_see(user, organization)

    return {"show_insights": SimpleLazyObject(shown)}
