"""Who wants to hear of what, by which channel and how often; changing one's own."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals.models import NotificationPreference
from pipelines.errors import InvalidInput

F = NotificationPreference.Frequency
# Each event a person may hear of, and the preference that says whether they want it.
EVENT_FIELD = {
    "task.opened": "new_task",
    "task.escalated": "new_task",
    "task.due_soon": "due_soon",
    "task.decided": "task_decided",
    "task.expired": "task_decided",
    "run.finished": "run_finished",
    # A mention is addressed to the person: only the channel and the frequency apply.
    "task.mentioned": "email",
}
FIELDS = ("email", "new_task", "due_soon", "task_decided", "run_finished")
OFF, NOW, DIGEST = "off", "now", "digest"


def preference_of(user: Any) -> NotificationPreference:
    """The person's preferences; the defaults (all, by email, at once) when never set."""
    found = NotificationPreference.objects.filter(user_id=user.pk).first()
    return found or NotificationPreference(user_id=user.pk)


def route(user: Any, event: str) -> str:
    """OFF (not wanted, or no email), NOW, or DIGEST (queued for the next digest)."""
    wanted = preference_of(user)
    if not wanted.email or not getattr(wanted, EVENT_FIELD[event]):
        return OFF
    return NOW if wanted.frequency == F.IMMEDIATE else DIGEST


@transaction.atomic
def preferences_set(*, user: Any, frequency: str, **wanted: bool) -> NotificationPreference:
    """Save the person's own preferences (the events, the email channel, how often)."""
    if frequency not in F.values:
        raise InvalidInput(
            f"{frequency!r} is not a frequency: {', '.join(F.values)}.",
            details=[{"field": "frequency", "message": "unknown"}],
        )
    unknown = set(wanted) - set(FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown preferences: {', '.join(sorted(unknown))}.")
    values = {name: bool(wanted.get(name, False)) for name in FIELDS}
    pref, _ = NotificationPreference.objects.select_for_update().update_or_create(
        user_id=user.pk,
        defaults={**values, "frequency": frequency, "updated_at": timezone.now()},
    )
    return pref
