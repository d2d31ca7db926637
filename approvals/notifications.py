"""Telling people about tasks: after commit, to every registered listener."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from approvals.models import HumanTask
from orgs import selectors as orgs
from orgs.models import Membership
from pipelines import events
from pipelines.models import Run
from pipelines.services.outbox import outbox_row, outbox_write
from pipelines.services.unit_of_work import RunTxn

log = logging.getLogger(__name__)

# Called with (event, task) after the transaction that caused the event commits.
# Events: task.opened, task.escalated, task.decided, task.expired. Email is one
# listener; webhooks subscribe to the event stream (pipelines.events) instead.
Listener = Callable[[str, HumanTask], None]
listeners: list[Listener] = []


def listen(listener: Listener) -> None:
    """Add a listener (from an AppConfig.ready()); adding one twice changes nothing."""
    if listener not in listeners:
        listeners.append(listener)


def notify_after_commit(
    event: str,
    task: HumanTask,
    *,
    channel: str = "",
    on_behalf_of: str = "",
    txn: RunTxn | None = None,
) -> None:
    """Tell listeners and hooks after commit; what durable hooks (webhooks) want is
    written to the outbox now, in the transaction that caused the event. `channel`: where
    a decision was made (web, api, deadline), for `task.decided`; `on_behalf_of`: whom
    the decider stood in for as their delegate. `txn`: the run's transaction, when the
    caller decides in one (its outbox row is then written with the run's other writes)."""
    # Read once, as this transaction leaves the task: the outbox row now and the
    # listeners after commit see the same state, whatever happens to the task later.
    fresh = _load(task.pk)
    if fresh is None:
        return
    payload = task_payload(fresh, channel=channel, on_behalf_of=on_behalf_of)
    if any(hook.durable for hook in events.hooks):
        if txn is None:
            outbox_write(event, payload, organization_id=fresh.organization_id)
        else:
            # With the run's transaction, the row goes out with the run's writes.
            row = outbox_row(event, payload, fresh.organization_id)
            if row is not None:
                txn.outbox.append(row)
    transaction.on_commit(lambda: notify(event, fresh, payload))


# What the payload and the listeners read of a task besides its own row.
LOADED = ("assignee", "assignee_role", "decided_by", "run__pipeline_version__pipeline")
_known: ContextVar[dict[int, HumanTask] | None] = ContextVar("known_tasks", default=None)


@contextmanager
def known(tasks: Iterable[HumanTask]) -> Iterator[None]:
    """Within the block, tell of these tasks as they are in memory instead of reading each
    again: a batch of decisions read them (with LOADED) under their runs' locks, and the
    services change them in place as they change their rows."""
    token = _known.set({task.pk: task for task in tasks})
    try:
        yield
    finally:
        _known.reset(token)


def _load(task_id: int) -> HumanTask | None:
    held = (_known.get() or {}).get(task_id)
    if held is not None:
        return held
    return HumanTask.objects.select_related(*LOADED).filter(pk=task_id).first()


def notify(event: str, task: HumanTask, payload: dict[str, Any]) -> None:
    task_id = task.pk
    for listener in listeners:
        try:
            listener(event, task)
        except Exception:
            # A failing notification must not undo or block the decision it reports.
            log.exception("notifying %s of task %s failed in %r", event, task_id, listener)
    # The same stream as the engine's events: hooks and webhooks subscribe there.
    events.emit(event, payload)


def task_payload(task: HumanTask, *, channel: str = "", on_behalf_of: str = "") -> dict[str, Any]:
    return {
        "organization": orgs.slug_of(task.organization_id),
        "id": task.pk,
        "run": task.run_id,
        "pipeline": task.run.pipeline_version.pipeline.name,
        "step": task.step_name,
        "generation": task.generation,
        "kind": task.kind,
        "status": task.status,
        "assignee": task.assignee.get_username() if task.assignee else None,
        "assignee_role": task.assignee_role.name if task.assignee_role else None,
        "due_at": task.due_at,
        "created_at": task.created_at,
        "decided_at": task.decided_at,
        "decided_by": task.decided_by.get_username() if task.decided_by else None,
        "channel": channel or None,
        "on_behalf_of": on_behalf_of or None,
        "url": task_url(task),
    }


def task_url(task: HumanTask) -> str:
    return f"{settings.FIREFLY_BASE_URL.rstrip('/')}/tasks/{task.pk}/"


def recipients(task: HumanTask, *, addressed: bool = True) -> list[Any]:
    """The task's assignee or role members who belong to its organization (a role is a
    group, and groups span organizations: news never does); with `addressed`, only those
    with an email address."""
    members = get_user_model().objects.filter(
        is_active=True, memberships__organization_id=task.organization_id
    )
    if task.assignee is not None:
        people = members.filter(pk=task.assignee.pk)
    elif task.assignee_role is not None:
        people = members.filter(groups=task.assignee_role)
    else:
        return []
    if addressed:
        people = people.exclude(email="")
    return list(people.distinct().order_by("email", "pk"))


_requesters: ContextVar[dict[int, Any] | None] = ContextVar("requesters", default=None)


def requester(run_id: int, organization_id: int) -> Any:
    """The run's starter, while an active member of its organization."""
    held = _requesters.get()
    if held is not None and run_id in held:
        return held[run_id]
    return (
        get_user_model()
        .objects.filter(
            is_active=True,
            memberships__organization_id=organization_id,
            pk__in=Run.objects.filter(pk=run_id).values("created_by_id"),
        )
        .first()
    )


@contextmanager
def requesters_known(run_ids: Iterable[int]) -> Iterator[None]:
    """Within the block, the requesters of these runs are read together, once: a batch of
    decisions tells each run's starter of its gate."""
    runs = list(
        Run.objects.filter(pk__in=set(run_ids)).values_list(
            "pk", "created_by_id", "organization_id"
        )
    )
    people = {
        person.pk: person
        for person in get_user_model().objects.filter(
            is_active=True, pk__in={starter for _, starter, _ in runs if starter}
        )
    }
    members = set(
        Membership.objects.filter(user_id__in=list(people)).values_list(
            "user_id", "organization_id"
        )
    )
    token = _requesters.set(
        {
            run_id: people.get(starter) if (starter, organization) in members else None
            for run_id, starter, organization in runs
        }
    )
    try:
        yield
    finally:
        _requesters.reset(token)
