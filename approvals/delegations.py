"""Out-of-office delegation: naming who decides one's tasks too while away, and ending it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.models import Delegation
from orgs import selectors as orgs
from pipelines.errors import Conflict, InvalidInput, NotFound
from pipelines.models import SecurityEvent

# Long enough for any leave; a delegation left forever would be a silent second assignee.
MAX_DAYS = 366


def _problem(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, details=[{"field": field, "message": message}])


def _recorded(
    organization_id: int, event: str, reason: str, *, actor: Any, address: str | None, **data: Any
) -> None:
    """Who may decide whose tasks changed: a security event, in the change's transaction."""
    SecurityEvent.objects.create(
        organization_id=organization_id,
        event=event,
        actor=actor,
        actor_name=actor.get_username()[:150],
        address=address or None,
        reason=reason,
        data=data or None,
    )


@transaction.atomic
def delegation_set(
    *,
    user: Any,
    organization: Any,
    delegate: str,
    starts_at: datetime,
    ends_at: datetime,
    address: str | None = None,
) -> Delegation:
    """Name a delegate for a date range (replacing the user's earlier one in this
    organization): a member who may decide the user's tasks, on their behalf, meanwhile."""
    org = orgs.pk_of(organization)
    if not orgs.is_member(user, org):
        raise NotFound("You belong to no such organization.")
    now = timezone.now()
    if ends_at <= now:
        raise _problem("The end is in the past: choose a date to come.", "ends_at")
    if ends_at <= starts_at:
        raise _problem("The end must come after the start.", "ends_at")
    if ends_at - max(starts_at, now) > timedelta(days=MAX_DAYS):
        raise _problem(f"A delegation lasts at most {MAX_DAYS} days.", "ends_at")
    name = delegate.replace("\x00", "").strip()
    person = get_user_model().objects.filter(username=name, is_active=True).first()
    # The same answer for someone unknown and someone of another organization: the form
    # tells no one who exists elsewhere.
    if person is None or not orgs.is_member(person, org):
        raise _problem(f"{name[:150]!r} is not a member of this organization.", "delegate")
    if person.pk == user.pk:
        raise _problem("Name someone else: you already decide your own tasks.", "delegate")
    previous = Delegation.objects.select_for_update().filter(organization_id=org, user=user).first()
    delegation = previous or Delegation(organization_id=org, user=user)
    replaced = previous.delegate.get_username() if previous is not None else None
    delegation.delegate, delegation.starts_at, delegation.ends_at = person, starts_at, ends_at
    delegation.created_at = now
    try:
        # A row that does not exist yet cannot be locked: two first delegations sent at
        # once meet at the unique constraint instead.
        with transaction.atomic():
            delegation.save()
    except IntegrityError as exc:
        raise Conflict("Your delegation changed meanwhile: look again and retry.") from exc
    _recorded(
        org,
        "delegation.set",
        f"{person.get_username()} covers {user.get_username()} from"
        f" {starts_at:%Y-%m-%d %H:%M} to {ends_at:%Y-%m-%d %H:%M} UTC",
        actor=user,
        address=address,
        delegate=person.get_username(),
        starts_at=starts_at.isoformat(),
        ends_at=ends_at.isoformat(),
        replaced=replaced,
    )
    return delegation


@transaction.atomic
def delegation_clear(*, user: Any, organization: Any, address: str | None = None) -> bool:
    """End the user's delegation now; False when there was none."""
    org = orgs.pk_of(organization)
    delegation = (
        Delegation.objects.select_for_update()
        .select_related("delegate")
        .filter(organization_id=org, user=user)
        .first()
    )
    if delegation is None:
        return False
    delegation.delete()
    _recorded(
        org,
        "delegation.cleared",
        f"{delegation.delegate.get_username()} no longer covers {user.get_username()}",
        actor=user,
        address=address,
        delegate=delegation.delegate.get_username(),
    )
    return True
