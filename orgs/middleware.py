"""The organization a page request acts in: `request.organization`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from orgs import rls, selectors
from orgs.models import Organization

SESSION_KEY = "firefly_organization"


class CurrentOrganizationMiddleware:
    """Sets `request.organization` from the session's choice (the header's switcher) or
    the user's first organization; None for visitors and users of no organization.

    The API sets it again after its own authentication (tokens carry their organization;
    `X-Firefly-Organization` picks one for session users of several).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        wanted = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
        request.organization = selectors.resolve(user, wanted)  # type: ignore[attr-defined]
        return self.get_response(request)


def organization_of(request: Any) -> Organization | None:
    """The organization a request acts in (None: the user belongs to none)."""
    return getattr(request, "organization", None)


class RowLevelSecurityMiddleware:
    """On PostgreSQL, holds a signed-in user's queries to `request.organization` for the
    whole request (orgs/rls.py): a query that forgets its filter still sees nothing of
    another organization. After CurrentOrganizationMiddleware.

    A request with an API token is left to the API, which holds it once the token says
    whose it is (orgs/api.py): the token lookup must see every token.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        scheme = request.headers.get("Authorization", "").partition(" ")[0]
        if scheme.lower() != "token":
            held = rls.held_to(getattr(request, "user", None), organization_of(request))
            if held is not None:
                rls.enter(held)
        try:
            return self.get_response(request)
        finally:
            # Whatever held the connection (this, the API, an eagerly applied task):
            # a kept connection must not carry the scope into the next request.
            rls.leave()
