"""Telling people about tasks: after commit, to every registered listener."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from approvals.models import HumanTask
from orgs import selectors as orgs
from pipelines import events
from pipelines.services.outbox import outbox_write

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
    event: str, task: HumanTask, *, channel: str = "", on_behalf_of: str = ""
) -> None:
    """Tell listeners and hooks after commit; what durable hooks (webhooks) want is
    written to the outbox now, in the transaction that caused the event. `channel`: where
    a decision was made (web, api, deadline), for `task.decided`; `on_behalf_of`: whom
    the decider stood in for as their delegate."""
    # Read once, as this transaction leaves the task: the outbox row now and the
    # listeners after commit see the same state, whatever happens to the task later.
    fresh = _load(task.pk)
    if fresh is None:
        return
    payload = task_payload(fresh, channel=channel, on_behalf_of=on_behalf_of)
    if any(hook.durable for hook in events.hooks):
        outbox_write(event, payload, organization_id=fresh.organization_id)
    transaction.on_commit(lambda: notify(event, fresh, payload))


def _load(task_id: int) -> HumanTask | None:
    return (
        HumanTask.objects.select_related(
            "assignee", "assignee_role", "decided_by", "run__pipeline_version__pipeline"
        )
        .filter(pk=task_id)
        .first()
    )


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
