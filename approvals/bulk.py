"""Deciding many tasks at once: each through its own service call, transaction and audit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from approvals import selectors, services
from approvals.models import Decision, HumanTask
from pipelines.errors import FireflyError, InvalidInput

# One request decides at most this many tasks: each locks its run and writes its audit
# entries, so a larger batch would hold a worker (and the runs' locks, one after another)
# for longer than a page or an API client waits.
BULK_MAX = 100
ACTIONS = ("approve", "reject")


@dataclass(frozen=True)
class Outcome:
    """What became of one task of the batch: decided, or refused with why."""

    task: int
    outcome: str
    status: str = ""
    reason: str = ""
    code: str = ""
    http_status: int = 200

    @property
    def decided(self) -> bool:
        return self.outcome == "decided"


def _problem(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, details=[{"field": field, "message": message}])


def task_ids(raw: list[Any]) -> list[int]:
    """The batch's ids in the order given, each once; a non-integer is named."""
    ids: list[int] = []
    for value in raw:
        try:
            task_id = int(value)
        except (TypeError, ValueError):
            raise _problem(f"{str(value)[:40]!r} is not a task id.", "tasks") from None
        if task_id < 1 or task_id > 2**63 - 1:
            raise _problem(f"{task_id} is not a task id.", "tasks")
        if task_id not in ids:
            ids.append(task_id)
    return ids


def tasks_decide(
    *,
    user: Any,
    organization: Any,
    action: str,
    task_ids: list[int],
    comment: str = "",
    channel: str = Decision.Channel.WEB,
) -> list[Outcome]:
    """Approve or reject each task on its own, through `task_approve`/`task_reject`: each
    decision commits (or is refused and audited) in its own transaction, so one refusal
    leaves the others decided. A task the user may not open in this organization is
    "not found", exactly as when asked for alone."""
    if action not in ACTIONS:
        raise _problem(f"{action!r} is not an action here: approve or reject.", "action")
    if not task_ids:
        raise _problem("Choose at least one task.", "tasks")
    if len(task_ids) > BULK_MAX:
        raise _problem(
            f"{len(task_ids)} tasks at once is too many: at most {BULK_MAX} per request.",
            "tasks",
        )
    # PostgreSQL text cannot hold NUL characters; nobody means to write one.
    comment = comment.replace("\x00", "")
    if action == "reject" and not comment.strip():
        raise _problem("Say why you reject (one comment for every task).", "comment")
    visible = set(
        HumanTask.objects.filter(
            selectors.visible(user, organization), pk__in=task_ids
        ).values_list("pk", flat=True)
    )
    outcomes = []
    for task_id in task_ids:
        if task_id not in visible:
            outcomes.append(
                Outcome(
                    task_id,
                    "refused",
                    reason=f"No task {task_id}.",
                    code="not_found",
                    http_status=404,
                )
            )
            continue
        try:
            if action == "approve":
                task = services.task_approve(
                    task_id=task_id, user=user, comment=comment, channel=channel
                )
            else:
                task = services.task_reject(
                    task_id=task_id, user=user, comment=comment, channel=channel
                )
        except FireflyError as exc:
            outcomes.append(
                Outcome(
                    task_id,
                    "refused",
                    reason=exc.message,
                    code=exc.code,
                    http_status=exc.http_status,
                )
            )
        else:
            outcomes.append(Outcome(task_id, "decided", status=task.status))
    return outcomes
