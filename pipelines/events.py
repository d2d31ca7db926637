"""In-process event hooks: callables run after commit with (event, payload).

A durable hook (webhooks) is not called after commit: the services write the events
it wants to the outbox in the transaction that caused them, and the relay calls it
(pipelines.services.outbox), so that no crash between the commit and the call loses one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)

# Events: step.started, step.succeeded, step.failed, step.waiting, run.finished (its
# payload has the status), run.failed, and the approvals app's task.opened,
# task.decided, task.expired, task.escalated. Payloads carry `run` and `pipeline`.
EVENTS = (
    "step.started",
    "step.succeeded",
    "step.failed",
    "step.waiting",
    "run.finished",
    "run.failed",
    "task.opened",
    "task.decided",
    "task.expired",
    "task.escalated",
)

Listener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Hook:
    listener: Listener
    events: frozenset[str] | None  # None: every event
    pipeline: str | None  # None: every pipeline
    durable: bool = False  # called by the outbox relay, in its transaction
    # A durable hook's SQL condition (PostgreSQL) that holds where it may want an event;
    # its two parameters are the organization's id and the event's name.
    listens_where: str | None = None

    def wants(self, event: str, payload: dict[str, Any]) -> bool:
        return (self.events is None or event in self.events) and (
            self.pipeline is None or self.pipeline == payload.get("pipeline")
        )


hooks: list[Hook] = []


def register(
    listener: Listener,
    *,
    events: Iterable[str] | None = None,
    pipeline: str | None = None,
    durable: bool = False,
    listens_where: str | None = None,
) -> Hook:
    """Call `listener(event, payload)` after commit for these events (of one pipeline).

    A `durable` listener is called by the outbox relay instead, exactly once per event,
    inside the transaction that marks the event relayed; its errors roll that back.
    With `listens_where`, an SQL condition on the organization's id and the event's name
    (two parameters, in that order), a run's event is written to the outbox only where
    the condition holds, as part of the same statement: an organization with no such
    subscriber costs its runs no outbox row and no relay.
    """
    wanted = frozenset(events) if events is not None else None
    unknown = sorted((wanted or set()) - set(EVENTS))
    if unknown:
        raise ValueError(f"unknown events {unknown}; known: {', '.join(EVENTS)}")
    hook = Hook(listener, wanted, pipeline, durable, listens_where)
    hooks.append(hook)
    return hook


def unregister(hook: Hook) -> None:
    if hook in hooks:
        hooks.remove(hook)


def emit_after_commit(event: str, payload: dict[str, Any]) -> None:
    # On the path of every step: nothing is scheduled when no hook wants the event.
    if any(not hook.durable and hook.wants(event, payload) for hook in hooks):
        transaction.on_commit(lambda: emit(event, payload))


def durable_wanted(event: str, payload: dict[str, Any]) -> bool:
    """Whether some durable hook wants the event (then it goes to the outbox)."""
    return any(hook.durable and hook.wants(event, payload) for hook in hooks)


def durable_conditions(event: str, payload: dict[str, Any]) -> list[str] | None:
    """The SQL conditions of the durable hooks that want the event (any one holding
    means the event is wanted); None when one of them listens everywhere."""
    conditions = []
    for hook in hooks:
        if hook.durable and hook.wants(event, payload):
            if hook.listens_where is None:
                return None
            conditions.append(hook.listens_where)
    return conditions


def emit(event: str, payload: dict[str, Any]) -> None:
    """Call the hooks (not the durable ones) that want the event; their errors are logged."""
    for hook in list(hooks):
        if hook.durable or not hook.wants(event, payload):
            continue
        try:
            hook.listener(event, payload)
        except Exception:
            # A hook's failure is its own: it never affects the run that emitted.
            run = payload.get("run")
            log.exception("event hook %r failed on %s of run %s", hook.listener, event, run)


def relay(event: str, payload: dict[str, Any]) -> None:
    """Call the durable hooks that want the event; an error propagates (to be retried)."""
    for hook in list(hooks):
        if hook.durable and hook.wants(event, payload):
            hook.listener(event, payload)
