"""Claiming, releasing, breaking and reassigning a human task."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from approvals import notifications
from approvals.guards import claim_holder, decide, task_data
from approvals.models import HumanTask
from orgs import selectors as orgs
from pipelines.errors import Conflict, InvalidInput
from pipelines.services.unit_of_work import RunTxn

# Usernames and group names are at most 150 characters.
NAME_MAX = 150


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
    """An organization admin hands a task to another member, a role, or both; its new
    assignees are notified. Names are resolved after the permission check, so that only
    admins learn whether one exists; refusals are audited by `decide`."""
    if not assignee and not role:
        raise InvalidInput(
            "Say whom to give the task to: a username, a role, or both.",
            details=[{"field": "to", "message": "give to (a username) or to_role (a role)"}],
        )
    for field, name in (("to", assignee), ("to_role", role)):
        if name and (len(name) > NAME_MAX or "\x00" in name):
            raise InvalidInput(
                f"{field}: at most {NAME_MAX} characters, none of them NUL.",
                details=[{"field": field, "message": f"at most {NAME_MAX} characters, no NUL"}],
            )

    def apply(txn: RunTxn, task: HumanTask) -> None:
        new_assignee = _member_named(assignee, task.organization_id) if assignee else None
        new_role = Group.objects.filter(name=role).first() if role else None
        if role and new_role is None:
            raise InvalidInput(
                f"No role {role!r}.", details=[{"field": "to_role", "message": "unknown role"}]
            )
        task.assignee, task.assignee_role = new_assignee, new_role
        task.claimed_by, task.claimed_at = None, None
        task.save(update_fields=["assignee", "assignee_role", "claimed_by", "claimed_at"])
        txn.audit(
            "task.reassigned", step_name=task.step_name, status=task.status, data=task_data(task)
        )
        notifications.notify_after_commit("task.opened", task)

    return decide(task_id, user, "reassign", apply)


def _member_named(username: str, organization_id: int) -> Any:
    """A member of the organization; the same error whether the user does not exist or
    belongs elsewhere, so that no one learns of other organizations' users."""
    found = get_user_model().objects.filter(username=username).first()
    if found is None or not orgs.is_member(found, organization_id):
        raise InvalidInput(
            f"No user {username!r} in this organization.",
            details=[{"field": "to", "message": "not a member of the organization"}],
        )
    return found
