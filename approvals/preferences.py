"""Who wants to hear of what, by which channel and how often; changing one's own."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals.models import NotificationPreference
from pipelines.errors import InvalidInput

F = NotificationPreference.Frequency
EMAIL, CHAT = "email", "chat"
CHANNELS = (EMAIL, CHAT)
EVENTS = ("new_task", "due_soon", "task_decided", "run_finished")
# Each event a person may hear of, and the preference that says whether they want it.
EVENT_FIELD = {
    "task.opened": "new_task",
    "task.escalated": "new_task",
    "task.due_soon": "due_soon",
    "task.decided": "task_decided",
    "task.expired": "task_decided",
    "run.finished": "run_finished",
    # A mention is addressed to the person: only the channel and the frequency apply.
    "task.mentioned": "",
}
OFF, NOW, DIGEST = "off", "now", "digest"


def field(channel: str, event_field: str) -> str:
    """The preference's column: email's have the plain names, other channels a prefix."""
    if not event_field:
        return channel
    return event_field if channel == EMAIL else f"{channel}_{event_field}"


FIELDS = tuple(f for channel in CHANNELS for f in (channel, *(field(channel, e) for e in EVENTS)))
FREQUENCY = {EMAIL: "frequency", CHAT: "chat_frequency"}
LAST_DIGEST = {EMAIL: "last_digest_at", CHAT: "chat_last_digest_at"}


# Each person's preferences read in the block (None: never set, the defaults), and whose
# are read together the first time one of them is asked for.
_remembered: ContextVar[dict[int, NotificationPreference | None] | None] = ContextVar(
    "preferences", default=None
)
_wanted: ContextVar[frozenset[int]] = ContextVar("preferences_wanted", default=frozenset())


@contextmanager
def remembered() -> Iterator[None]:
    """Within the block, each person's preferences are read once: a batch of decisions
    tells the same people of many tasks."""
    token = _remembered.set({})
    try:
        yield
    finally:
        _remembered.reset(token)


@contextmanager
def known(people: Iterable[Any]) -> Iterator[None]:
    """Within the block, the first time one of these people's preferences is asked for,
    all of theirs are read, in one query: telling everyone a task is for must not read
    them one person at a time (a role may have hundreds). Nothing is read if no one's is
    asked for (no one has an address, or a channel that can reach them)."""
    outer = _remembered.get()
    memo = _remembered.set({}) if outer is None else None
    wanted = _wanted.set(_wanted.get() | {person.pk for person in people})
    try:
        yield
    finally:
        _wanted.reset(wanted)
        if memo is not None:
            _remembered.reset(memo)


def preference_of(user: Any) -> NotificationPreference:
    """The person's preferences; the defaults (all, by every channel, at once) when never set."""
    memo = _remembered.get()
    if memo is None:
        found = NotificationPreference.objects.filter(user_id=user.pk).first()
        return found or NotificationPreference(user_id=user.pk)
    if user.pk not in memo:
        together = (_wanted.get() - memo.keys()) | {user.pk}
        memo.update(dict.fromkeys(together))
        memo.update(
            (row.user_id, row)
            for row in NotificationPreference.objects.filter(user_id__in=together)
        )
    return memo[user.pk] or NotificationPreference(user_id=user.pk)


def route(user: Any, event: str, channel: str = EMAIL) -> str:
    """On that channel: OFF (not wanted), NOW, or DIGEST (queued for the next digest)."""
    wanted = preference_of(user)
    if not getattr(wanted, channel) or not getattr(wanted, field(channel, EVENT_FIELD[event])):
        return OFF
    return NOW if getattr(wanted, FREQUENCY[channel]) == F.IMMEDIATE else DIGEST


def _frequency(name: str, value: str) -> str:
    if value not in F.values:
        raise InvalidInput(
            f"{name}: {value!r} is not a frequency: {', '.join(F.values)}.",
            details=[{"field": name, "message": "unknown"}],
        )
    return value


@transaction.atomic
def preferences_set(*, user: Any, frequency: str, **wanted: bool | str) -> NotificationPreference:
    """Save the person's own preferences: each channel on or off, its events, how often
    (`frequency` is email's, `chat_frequency` chat's, at once when not given). An event
    not given is off."""
    chat_frequency = str(wanted.pop("chat_frequency", F.IMMEDIATE))
    values: dict[str, Any] = {
        "frequency": _frequency("frequency", frequency),
        "chat_frequency": _frequency("chat_frequency", chat_frequency),
    }
    unknown = set(wanted) - set(FIELDS)
    if unknown:
        raise InvalidInput(
            f"Unknown preferences: {', '.join(sorted(unknown))}.",
            details=[{"field": name, "message": "unknown"} for name in sorted(unknown)],
        )
    values.update({name: bool(wanted.get(name, False)) for name in FIELDS})
    pref, _ = NotificationPreference.objects.select_for_update().update_or_create(
        user_id=user.pk, defaults={**values, "updated_at": timezone.now()}
    )
    return pref
