"""The API's organization: from the token, or chosen by a session user's header."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from orgs import rls, selectors
from orgs.middleware import SESSION_KEY

HEADER = "X-Firefly-Organization"


class InOrganization(BasePermission):
    """Signed in; sets `request.organization` for the views and selectors below.

    A token acts in the organization it was made for, as long as its user still belongs
    to it. A session user acts in the organization `X-Firefly-Organization` names (slug
    or id), else the one the pages chose. An organization the user is not in is answered
    like one that does not exist.
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        token_org = getattr(request.auth, "organization_id", None)
        if token_org is not None:
            if not selectors.is_member(user, token_org):
                raise exceptions.PermissionDenied(
                    "This token's user no longer belongs to its organization."
                )
            org = selectors.memberships(user).get(token_org, (None, 0))[0]
            if org is None:  # a superuser's token for an organization they are not in
                org = selectors.resolve(user, token_org)
        else:
            wanted = request.headers.get(HEADER) or request.session.get(SESSION_KEY)
            org = selectors.resolve(user, wanted)
            if org is None and request.headers.get(HEADER):
                raise exceptions.NotFound(f"No organization {request.headers[HEADER]!r}.")
        request.organization = org
        request._request.organization = org
        # Row-level security from here on; RowLevelSecurityMiddleware lets go at the end.
        rls.enter(rls.held_to(user, org))
        return True
