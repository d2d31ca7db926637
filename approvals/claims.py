"""Claiming, releasing, breaking and reassigning a human task."""

from __future__ import annotations

from typing import Any

from approvals import notifications
from approvals.guards import claim_holder, decide, role_named, task_data, user_named
from approvals.models import HumanTask
from orgs import selectors as orgs
from pipelines.errors import Conflict, InvalidInput
from pipelines.services.unit_of_work import RunTxn


def task_claim(*, task_id: int, user: Any) -> HumanTask:
    """Take a task so that the others of its role leave it to you."""

    def apply(txn: RunTxn, task: HumanTask) -> None:
        holder = claim_holder(task, txn.now)
        if holder is not None and holder.pk != user.pk:
            raise Conflict(f"Task {task.pk} is already claimed by {holder.get_username()}.")
        task.claimed_by, task.claimed_at = user, txn.now
        task.save(update_fields=["claimed_by", "claimed_at"])
        txn.audit(
            "task.claimed", step_name=task.step_name, status=task.status, data=task_data(task)
        )

    return decide(task_id, user, "claim", apply)


def task_unclaim(*, task_id: int, user: Any) -> HumanTask:
    """Give a claimed task back to its role."""

    def apply(txn: RunTxn, task: HumanTask) -> None:
        if claim_holder(task, txn.now) is None:
            raise Conflict(f"Task {task.pk} is not claimed.")
        task.claimed_by, task.claimed_at = None, None
        task.save(update_fields=["claimed_by", "claimed_at"])
        txn.audit(
            "task.unclaimed", step_name=task.step_name, status=task.status, data=task_data(task)
        )

    return decide(task_id, user, "unclaim", apply)


def task_claim_break(*, task_id: int, user: Any) -> HumanTask:
    """An organization admin releases someone else's claim at once (a reviewer away, a
    claim left behind). Refusals are audited by `decide`."""

    def apply(txn: RunTxn, task: HumanTask) -> None:
        holder = claim_holder(task, txn.now)
        if holder is None:
            raise Conflict(f"Task {task.pk} is not claimed.")
        task.claimed_by, task.claimed_at = None, None
        task.save(update_fields=["claimed_by", "claimed_at"])
        txn.audit(
            "task.claim_broken",
            step_name=task.step_name,
            status=task.status,
            data=task_data(task, claimed_by=holder.get_username()),
        )

    return decide(task_id, user, "break_claim", apply)


def task_reassign(
    *, task_id: int, user: Any, assignee: str | None = None, role: str | None = None
) -> HumanTask:
    """An organization admin hands a task to another member or a role; its new assignees
    are notified. Refusals are audited by `decide`."""
    new_assignee = user_named(assignee)
    if assignee and new_assignee is None:
        raise InvalidInput(
            f"No user {assignee!r}.", details=[{"field": "assignee", "message": "unknown user"}]
        )

    def apply(txn: RunTxn, task: HumanTask) -> None:
        if new_assignee is not None and not orgs.is_member(new_assignee, task.organization_id):
            raise InvalidInput(
                f"No user {assignee!r} in this organization.",
                details=[{"field": "assignee", "message": "not a member of the organization"}],
            )
        task.assignee, task.assignee_role = new_assignee, role_named(role)
        task.claimed_by, task.claimed_at = None, None
        task.save(update_fields=["assignee", "assignee_role", "claimed_by", "claimed_at"])
        txn.audit(
            "task.reassigned", step_name=task.step_name, status=task.status, data=task_data(task)
        )
        notifications.notify_after_commit("task.opened", task)

    return decide(task_id, user, "reassign", apply)
