"""Who may act on a human task, and the locked, audited frame every decision runs in."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import rules
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals import rollup, selectors
from approvals.models import Decision, HumanTask
from orgs import selectors as orgs
from pipelines import permissions
from pipelines.errors import Conflict, NotFound, PermissionDenied
from pipelines.models import Run
from pipelines.services.unit_of_work import RunTxn, locked_run

log = logging.getLogger(__name__)

T = HumanTask.Status
A = Decision.Action
# What a decision does to its task once the run is locked and the guard said yes.
Apply = Callable[[RunTxn, HumanTask], None]


class AlreadyDecided(Conflict):
    """The task is no longer open; the message says who closed it and when."""

    code = "already_decided"


def user_named(username: str | None) -> Any:
    if not username:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        log.warning(
            "task assignee %r does not exist; only its role and superusers may act", username
        )
    return user


def role_named(name: str | None) -> Group | None:
    # A role named in a spec is a group: create it so an admin only has to add members.
    return Group.objects.get_or_create(name=name)[0] if name else None


def task_data(task: HumanTask, **extra: Any) -> dict[str, Any]:
    return {
        "task": task.pk,
        "kind": task.kind,
        "assignee": task.assignee.get_username() if task.assignee else None,
        "role": task.assignee_role.name if task.assignee_role else None,
        **extra,
    }


def close(task: HumanTask, status: str, user: Any, txn: RunTxn) -> None:
    task.status, task.decided_at, task.decided_by = status, txn.now, user
    task.save(update_fields=["status", "decided_at", "decided_by"])
    rollup.task_closed(task)


# --- who may act ----------------------------------------------------------------------


def _own(user: Any, task: HumanTask) -> bool:
    """Assigned to the user or one of their roles (membership checked by the caller)."""
    if task.assignee_id is not None and task.assignee_id == user.pk:
        return True
    return task.assignee_role_id is not None and task.assignee_role_id in _group_ids(user)


@rules.predicate
def decides(user: Any, task: HumanTask) -> bool:
    """The assignee and members of the assignee role who belong to the task's
    organization (groups span organizations, tasks never do), superusers, and the
    delegate of one of them while they are away."""
    if not permissions.is_person(user) or not orgs.is_member(user, task.organization_id):
        return False
    if user.is_superuser or _own(user, task):
        return True
    return bool(covered_on(task, user))


def covered_on(task: HumanTask, user: Any, now: datetime | None = None) -> list[Any]:
    """Who, away now, named the user their delegate and may decide this task themselves
    (as assignee or by role, never as superuser: a delegate gets no more than a reviewer)."""
    delegations = selectors.covering(user, task.organization_id, now).select_related("user")
    return [d.user for d in delegations.order_by("user_id") if _own(d.user, task)]


def behalf_of(task: HumanTask, user: Any, txn: Moment) -> Any:
    """The person the user decides for as their delegate; None when the task is the user's
    own to decide. Of several people covered, one who did not start the run is preferred,
    so separation of duties refuses only when every way in crosses it."""
    if user.is_superuser or _own(user, task):
        return None
    people = covered_on(task, user, txn.now)
    starters = permissions.lineage_starters(txn.run) if people else set()
    people.sort(key=lambda person: person.pk in starters)
    return people[0] if people else None


def _group_ids(user: Any) -> set[int]:
    cached = getattr(user, "_firefly_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("pk", flat=True))
        user._firefly_groups = cached
    return cached


@rules.predicate
def views_tasks_run(user: Any, task: HumanTask) -> bool:
    return permissions.allowed(user, "view_run", task.run)


@rules.predicate
def administers_task(user: Any, task: HumanTask) -> bool:
    return orgs.is_admin(user, task.organization_id)


TASK_RULES = rules.RuleSet()
# Who may decide sees the task and the context it shows, and no more of the run.
TASK_RULES.add_rule("view_task", decides | views_tasks_run)
TASK_RULES.add_rule("decide_task", decides)
# Reassigning and breaking another's claim: the organization's admins.
TASK_RULES.add_rule("manage_task", administers_task)


def can_act(user: Any, task: HumanTask) -> bool:
    return TASK_RULES.test_rule("decide_task", user, task)


def can_view(user: Any, task: HumanTask) -> bool:
    return TASK_RULES.test_rule("view_task", user, task)


def can_manage(user: Any, task: HumanTask) -> bool:
    return TASK_RULES.test_rule("manage_task", user, task)


def claim_holder(task: HumanTask, now: datetime | None = None) -> Any:
    """Who holds the task's claim; None when unclaimed or the claim has lapsed."""
    if task.claimed_by_id is None or task.claimed_at is None:
        return None
    ttl = timedelta(seconds=settings.FIREFLY_CLAIM_TTL_S)
    return task.claimed_by if task.claimed_at + ttl > (now or timezone.now()) else None


class Moment(Protocol):
    """When and on which run a guard is asked: a locked run's transaction (RunTxn), or
    `Preview` for a page choosing which actions to offer."""

    @property
    def run(self) -> Run: ...

    @property
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class Preview:
    run: Run
    now: datetime


def refusal_now(task: HumanTask, user: Any, action: str) -> Exception | None:
    """The refusal the service would give this action now, without a lock: a page offers
    only what it would not refuse and shows the reason instead (the service still checks,
    under its lock, when the action comes)."""
    return refusal_for(task, user, action, Preview(run=task.run, now=timezone.now()))


def refusal_for(task: HumanTask, user: Any, action: str, txn: Moment) -> Exception | None:
    if user is not None and not can_view(user, task):
        # Not even told whether it is open: as if it did not exist.
        return NotFound(f"No task {task.pk}.")
    if not task.is_open:
        by = task.decided_by.get_username() if task.decided_by else "the deadline"
        verbs = {T.COMPLETED: "decided", T.REJECTED: "rejected", T.EXPIRED: "expired"}
        verb = verbs.get(T(task.status), "cancelled")
        when = f"{task.decided_at:%Y-%m-%d %H:%M:%S} UTC" if task.decided_at else "earlier"
        return AlreadyDecided(f"Task {task.pk} was already {verb} by {by} at {when}.")
    if action in ("reassign", "break_claim"):
        if can_manage(user, task):
            return None
        verb = "reassign" if action == "reassign" else "break a claim on"
        return PermissionDenied(f"Only the organization's admins may {verb} task {task.pk}.")
    if not can_act(user, task):
        names = []
        if task.assignee is not None:
            names.append(task.assignee.get_username())
        if task.assignee_role is not None:
            names.append(f"role {task.assignee_role.name}")
        who = " / ".join(names)
        return PermissionDenied(
            f"You may not act on task {task.pk}: it is for {who or 'superusers'}."
        )
    holder = claim_holder(task, txn.now)
    if holder is not None and holder.pk != user.pk and not user.is_superuser:
        return PermissionDenied(f"Task {task.pk} is claimed by {holder.get_username()}.")
    # Separation of duties: whoever started this run, or any run it was forked or
    # handed off from, may not move it on (nor claim it, which only serves to decide).
    # A delegate is held to it twice: as themselves and as the person they stand in for.
    moves_on = action in (A.APPROVE, A.SUBMIT, A.CHOOSE, "claim")
    behalf = behalf_of(task, user, txn)
    if moves_on and not task.allow_self_approval:
        starters = permissions.lineage_starters(txn.run)
        if user.pk in starters:
            if txn.run.created_by_id == user.pk:
                why = "You started this run"
            else:
                why = "You started a run this one was forked or handed off from"
            return PermissionDenied(f"{why}, so you may not approve it yourself.")
        if behalf is not None and behalf.pk in starters:
            return PermissionDenied(
                f"{behalf.get_username()} started this run (or one it came from), so as their"
                " delegate you may not approve it."
            )
    if action == A.APPROVE:
        return _voted(task, user, behalf)
    return None


def approvals_of(task: HumanTask) -> list[Decision]:
    """The task's approving votes, oldest first, with their voters. Read once, under the
    run's lock, for the guard and the decision alike (`prefetch_approvals` reads a whole
    batch's)."""
    votes = getattr(task, "_firefly_votes", None)
    if votes is None:
        votes = list(task.decisions.filter(action=A.APPROVE).select_related("user").order_by("id"))
        task._firefly_votes = votes  # type: ignore[attr-defined]
    return votes


def prefetch_approvals(tasks: list[HumanTask]) -> None:
    """`approvals_of` for many tasks in one query (their runs locked)."""
    found: dict[int, list[Decision]] = {task.pk: [] for task in tasks}
    decisions = Decision.objects.filter(task_id__in=list(found), action=A.APPROVE)
    for vote in decisions.select_related("user").order_by("id"):
        found[vote.task_id].append(vote)
    for task in tasks:
        task._firefly_votes = found[task.pk]  # type: ignore[attr-defined]


def _voted(task: HumanTask, user: Any, behalf: Any) -> Exception | None:
    """One vote per person: a delegate's vote counts for the person covered, who then
    may not vote again, nor may the delegate vote twice for them."""
    votes = approvals_of(task)
    if any(v.user_id == user.pk for v in votes):
        return Conflict(f"You have already approved task {task.pk}.")
    person = behalf if behalf is not None else user
    vote = next((v for v in votes if person.pk in (v.user_id, v.on_behalf_of_id)), None)
    if vote is None:
        return None
    if vote.user is None or vote.user_id == person.pk:
        return Conflict(f"{person.get_username()} has already approved task {task.pk}.")
    return Conflict(
        f"{vote.user.get_username()} already approved task {task.pk} on behalf of"
        f" {person.get_username()}."
    )


def decide(task_id: int, user: Any, action: str, apply: Apply) -> HumanTask:
    """Lock the run then the task, check the guard, and apply the decision.

    The run lock serializes every decision and the deadline on one task: the first
    wins, and the others see it closed. A refusal is audited and committed, then raised.
    """
    run_id = HumanTask.objects.filter(pk=task_id).values_list("run_id", flat=True).first()
    if run_id is None:
        raise NotFound(f"No task {task_id}.")
    refusal = None
    with locked_run(run_id, actor=user) as txn:
        task = (
            HumanTask.objects.select_for_update(of=("self",))
            .select_related("assignee", "assignee_role", "claimed_by", "decided_by")
            .get(pk=task_id)
        )
        refusal = refusal_for(task, user, action, txn)
        if refusal is None:
            apply(txn, task)
        else:
            audit_refusal(txn, task, action, refusal)
    if refusal is not None:
        raise refusal
    return task


def audit_refusal(txn: RunTxn, task: HumanTask, action: str, refusal: Exception) -> None:
    """The refused decision's entry in its run's chain (`task.refused`), with why."""
    txn.audit(
        "task.refused",
        step_name=task.step_name,
        status=task.status,
        error_message=str(refusal),
        data={"task": task.pk, "action": action},
    )
