"""Recording refusals that belong to no run (their own append-only table)."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from pipelines.models import SecurityEvent

log = logging.getLogger("firefly.security")


def refusal_record(
    *,
    event: str,
    reason: str,
    actor: Any = None,
    address: str | None = None,
    organization: Any = None,
    **data: Any,
) -> SecurityEvent:
    """Write one refusal (and log it): who tried what, from where, and why it was refused.

    Call it outside the refused change's transaction (views and services do, after the
    refusal was raised): a transaction that rolls back would take the evidence with it.
    """
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    name = user.get_username() if user is not None else str(data.pop("username", "") or "anonymous")
    log.warning("refused %s by %s from %s: %s", event, name, address or "-", reason)
    return SecurityEvent.objects.create(
        organization_id=getattr(organization, "pk", organization),
        event=event,
        actor=user,
        actor_name=name[:150],
        address=address or None,
        reason=reason,
        data=data or None,
    )


def login_locked_out(
    sender: Any, *, request: Any, username: str | None, ip_address: str | None, **kwargs: Any
) -> None:
    """django-axes' `user_locked_out`: a login refused for too many failures."""
    failures = getattr(request, "axes_failures_since_start", None)
    refusal_record(
        event="login.locked_out",
        reason=(
            f"too many failed logins ({settings.AXES_FAILURE_LIMIT} per username or per"
            f" address); locked out for {settings.AXES_COOLOFF_TIME}"
        ),
        address=ip_address,
        username=username or "",
        path=getattr(request, "path", ""),
        failures=failures,
    )
