"""Every change to a human task, each in its run's transaction with its audit entries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals import notifications
from approvals.models import Decision, HumanTask
from pipelines import engine, permissions, schemas
from pipelines.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from pipelines.limits import bounds_problem
from pipelines.models import StepRun
from pipelines.services.transitions import resolve_waiting, rollback
from pipelines.services.unit_of_work import RunTxn, locked_run, step_states
from pipelines.versions import version_spec

log = logging.getLogger(__name__)

T = HumanTask.Status
A = Decision.Action


class AlreadyDecided(Conflict):
    """The task is no longer open; the message says who closed it and when."""

    code = "already_decided"


# --- opening and closing (called inside the pipelines transaction) ---------------------


def task_open(
    *, txn: RunTxn, step_run: StepRun, kind: str, config: dict[str, Any], reason: str = ""
) -> HumanTask:
    """Open the task that decides a waiting step; its assignees are notified after commit."""
    now = txn.now
    timeout = config.get("timeout_hours")
    task = HumanTask.objects.create(
        run=txn.run,
        step_run=step_run,
        step_name=step_run.step_name,
        generation=step_run.generation,
        kind=kind,
        assignee=_user(config.get("assignee")),
        assignee_role=_role(config.get("assignee_role")),
        instructions=reason or config.get("instructions", ""),
        context=_context(txn, step_run.step_name, config.get("context")),
        form_schema=config.get("form_schema"),
        options=config.get("options"),
        quorum=config.get("quorum", 1),
        allow_self_approval=config.get("allow_self_approval", False),
        due_at=now + timedelta(hours=timeout) if timeout else None,
        on_timeout=config.get("on_timeout", "reject" if timeout else ""),
        created_at=now,
    )
    txn.audit(
        "task.opened",
        step_name=task.step_name,
        status=task.status,
        pause_reason=reason,
        data=_task_data(task),
    )
    notifications.notify_after_commit("task.opened", task)
    return task


def tasks_cancel(*, txn: RunTxn, step_run_ids: list[int]) -> None:
    """Cancel the open tasks of steps the run no longer waits for (cancel, roll back)."""
    for task in HumanTask.objects.filter(step_run_id__in=step_run_ids, status=T.OPEN):
        _close(task, T.CANCELLED, None, txn)
        txn.audit(
            "task.cancelled", step_name=task.step_name, status=task.status, data={"task": task.pk}
        )


def _user(username: str | None) -> Any:
    if not username:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        log.warning(
            "task assignee %r does not exist; only its role and superusers may act", username
        )
    return user


def _role(name: str | None) -> Group | None:
    # A role named in a spec is a group: create it so an admin only has to add members.
    return Group.objects.get_or_create(name=name)[0] if name else None


def _context(txn: RunTxn, step_name: str, wanted: dict[str, Any] | None) -> dict[str, Any]:
    wanted = wanted or {}
    inputs = wanted.get("inputs", True)
    run_inputs = txn.run.inputs or {}
    if isinstance(inputs, list):
        run_inputs = {k: v for k, v in run_inputs.items() if k in inputs}
    elif not inputs:
        run_inputs = {}
    upstream = wanted.get("upstream", list(txn.spec.by_name[step_name].after))
    return {"inputs": run_inputs, "upstream": txn.outputs(set(upstream))}


def _task_data(task: HumanTask, **extra: Any) -> dict[str, Any]:
    return {
        "task": task.pk,
        "kind": task.kind,
        "assignee": task.assignee.get_username() if task.assignee else None,
        "role": task.assignee_role.name if task.assignee_role else None,
        **extra,
    }


def _close(task: HumanTask, status: str, user: Any, txn: RunTxn) -> None:
    task.status, task.decided_at, task.decided_by = status, txn.now, user
    task.save(update_fields=["status", "decided_at", "decided_by"])


# --- who may act ----------------------------------------------------------------------


def can_act(user: Any, task: HumanTask) -> bool:
    """The assignee, members of the assignee role, and superusers may decide a task."""
    if not user or not user.is_authenticated:
        return False
    if user.is_superuser or (task.assignee_id is not None and task.assignee_id == user.pk):
        return True
    return (
        task.assignee_role_id is not None and user.groups.filter(pk=task.assignee_role_id).exists()
    )


def claim_holder(task: HumanTask, now: datetime | None = None) -> Any:
    """Who holds the task's claim; None when unclaimed or the claim has lapsed."""
    if task.claimed_by_id is None or task.claimed_at is None:
        return None
    ttl = timedelta(seconds=settings.FIREFLY_CLAIM_TTL_S)
    return task.claimed_by if task.claimed_at + ttl > (now or timezone.now()) else None


def _refusal(task: HumanTask, user: Any, action: str, txn: RunTxn) -> Exception | None:
    if not task.is_open:
        by = task.decided_by.get_username() if task.decided_by else "the deadline"
        verbs = {T.COMPLETED: "decided", T.REJECTED: "rejected", T.EXPIRED: "expired"}
        verb = verbs.get(T(task.status), "cancelled")
        when = f"{task.decided_at:%Y-%m-%d %H:%M:%S} UTC" if task.decided_at else "earlier"
        return AlreadyDecided(f"Task {task.pk} was already {verb} by {by} at {when}.")
    if action in ("reassign", "break_claim"):  # staff, checked by the service
        return None
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
    moves_on = action in (A.APPROVE, A.SUBMIT, A.CHOOSE, "claim")
    if (
        moves_on
        and not task.allow_self_approval
        and user.pk in permissions.lineage_starters(txn.run)
    ):
        if txn.run.created_by_id == user.pk:
            why = "You started this run"
        else:
            why = "You started a run this one was forked or handed off from"
        return PermissionDenied(f"{why}, so you may not approve it yourself.")
    if action == A.APPROVE and task.decisions.filter(user=user, action=A.APPROVE).exists():
        return Conflict(f"You have already approved task {task.pk}.")
    return None


def _decide(
    task_id: int, user: Any, action: str, apply: Callable[[RunTxn, HumanTask], None]
) -> HumanTask:
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
        refusal = _refusal(task, user, action, txn)
        if refusal is None:
            apply(txn, task)
        else:
            txn.audit(
                "task.refused",
                step_name=task.step_name,
                status=task.status,
                error_message=str(refusal),
                data={"task": task.pk, "action": action},
            )
    if refusal is not None:
        raise refusal
    return task


# --- decisions ------------------------------------------------------------------------


def task_approve(*, task_id: int, user: Any, comment: str = "") -> HumanTask:
    """One vote; the task completes when `quorum` distinct people approved."""

    def apply(txn: RunTxn, task: HumanTask) -> None:
        if task.kind not in (HumanTask.Kind.APPROVAL, HumanTask.Kind.PAUSE):
            raise InvalidInput(f"Task {task.pk} is a {task.kind} task: complete it instead.")
        Decision.objects.create(
            task=task, user=user, action=A.APPROVE, comment=comment, created_at=txn.now
        )
        votes = list(task.decisions.filter(action=A.APPROVE).select_related("user").order_by("id"))
        done = len(votes) >= task.quorum
        txn.audit(
            "task.approved",
            step_name=task.step_name,
            status=T.COMPLETED if done else T.OPEN,
            data=_task_data(task, votes=len(votes), quorum=task.quorum, comment=comment),
        )
        if done:
            _close(task, T.COMPLETED, user, txn)
            outputs = {
                "decision": "approved",
                "approvers": [v.user.get_username() for v in votes if v.user],
                "comment": comment,
                "comments": [v.comment for v in votes if v.comment],
                "data": None,
            }
            resolve_waiting(txn, task.step_name, status=StepRun.Status.SUCCEEDED, outputs=outputs)
            notifications.notify_after_commit("task.decided", task)

    return _decide(task_id, user, A.APPROVE, apply)


def task_reject(*, task_id: int, user: Any, comment: str) -> HumanTask:
    """Veto: the step is rejected and the run ends `rejected`."""
    if not comment.strip():
        raise InvalidInput(
            "Say why you reject.", details=[{"field": "comment", "message": "required"}]
        )

    def apply(txn: RunTxn, task: HumanTask) -> None:
        withdrawn = _vote_withdrawn(task, user)
        Decision.objects.create(
            task=task, user=user, action=A.REJECT, comment=comment, created_at=txn.now
        )
        _close(task, T.REJECTED, user, txn)
        txn.audit(
            "task.rejected",
            step_name=task.step_name,
            status=task.status,
            data=_task_data(task, comment=comment, **withdrawn),
        )
        resolve_waiting(txn, task.step_name, status=StepRun.Status.REJECTED, error=comment)
        notifications.notify_after_commit("task.decided", task)

    return _decide(task_id, user, A.REJECT, apply)


def _vote_withdrawn(task: HumanTask, user: Any) -> dict[str, Any]:
    """A veto after one's own approval is allowed: the vote stays in the history, and the
    veto's audit entry names it, so the trail shows the reviewer changed their mind."""
    vote = task.decisions.filter(user=user, action=A.APPROVE).first()
    return {"withdraws_approval": vote.pk} if vote is not None else {}


def rollback_targets(task: HumanTask) -> list[str]:
    """Steps a reviewer may roll the run back to from this task (a read: no lock)."""
    run = task.run
    spec = version_spec(run.pipeline_version_id)
    return engine.rollback_targets(spec, task.step_name, step_states(run.pk))


def task_rollback(*, task_id: int, user: Any, to_step: str, comment: str = "") -> HumanTask:
    """Reset `to_step` and everything after it (this step too) and run again from there."""

    def apply(txn: RunTxn, task: HumanTask) -> None:
        targets = engine.rollback_targets(txn.spec, task.step_name, txn.states)
        if to_step not in targets:
            raise InvalidInput(
                f"Cannot roll back to {to_step!r}; choose one of: {', '.join(targets) or 'none'}.",
                details=[
                    {
                        "field": "to_step",
                        "message": f"not a completed step upstream of {task.step_name!r}",
                    }
                ],
            )
        withdrawn = _vote_withdrawn(task, user)
        Decision.objects.create(
            task=task,
            user=user,
            action=A.ROLLBACK,
            comment=comment,
            rollback_to=to_step,
            created_at=txn.now,
        )
        _close(task, T.CANCELLED, user, txn)
        txn.audit(
            "task.rolled_back",
            step_name=task.step_name,
            status=task.status,
            data=_task_data(task, to_step=to_step, comment=comment, **withdrawn),
        )
        rollback(txn, to_step, comment=comment, origin=task.step_name)
        notifications.notify_after_commit("task.decided", task)

    return _decide(task_id, user, A.ROLLBACK, apply)


def task_complete(
    *, task_id: int, user: Any, data: Any = None, choice: str | None = None
) -> HumanTask:
    """Submit an input task's form data, or a choice task's choice."""

    def apply(txn: RunTxn, task: HumanTask) -> None:
        if task.kind == HumanTask.Kind.INPUT:
            _validate_form(task, data)
            action, outputs = A.SUBMIT, {"decision": "submitted", "data": data}
        elif task.kind == HumanTask.Kind.CHOICE:
            if choice not in (task.options or []):
                raise InvalidInput(
                    f"{choice!r} is not one of the options: {', '.join(task.options or [])}.",
                    details=[{"field": "choice", "message": "not one of the options"}],
                )
            action, outputs = A.CHOOSE, {"decision": "chosen", "choice": choice}
        else:
            raise InvalidInput(f"Task {task.pk} is an {task.kind} task: approve or reject it.")
        outputs["by"] = user.get_username()
        Decision.objects.create(
            task=task, user=user, action=action, data=outputs, created_at=txn.now
        )
        _close(task, T.COMPLETED, user, txn)
        txn.audit(
            f"task.{outputs['decision']}",
            step_name=task.step_name,
            status=task.status,
            outputs=outputs,
            data=_task_data(task),
        )
        resolve_waiting(txn, task.step_name, status=StepRun.Status.SUCCEEDED, outputs=outputs)
        notifications.notify_after_commit("task.decided", task)

    action = A.SUBMIT if choice is None else A.CHOOSE
    return _decide(task_id, user, action, apply)


def _validate_form(task: HumanTask, data: Any) -> None:
    if not isinstance(data, dict):
        raise InvalidInput(
            "Form data must be an object.", details=[{"field": "", "message": "not an object"}]
        )
    too_big = bounds_problem(data, what="Form data", max_bytes=settings.FIREFLY_INPUTS_MAX_BYTES)
    if too_big:
        raise InvalidInput(too_big, details=[{"field": "", "message": too_big}])
    problems = schemas.field_problems(task.form_schema or {}, data)
    if problems:
        raise InvalidInput(
            "The form has errors: "
            + "; ".join(f"{p['field'] or 'form'}: {p['message']}" for p in problems),
            details=problems,
        )


# --- claiming and reassigning ---------------------------------------------------------


def task_claim(*, task_id: int, user: Any) -> HumanTask:
    """Take a task so that the others of its role leave it to you."""

    def apply(txn: RunTxn, task: HumanTask) -> None:
        holder = claim_holder(task, txn.now)
        if holder is not None and holder.pk != user.pk:
            raise Conflict(f"Task {task.pk} is already claimed by {holder.get_username()}.")
        task.claimed_by, task.claimed_at = user, txn.now
        task.save(update_fields=["claimed_by", "claimed_at"])
        txn.audit(
            "task.claimed", step_name=task.step_name, status=task.status, data=_task_data(task)
        )

    return _decide(task_id, user, "claim", apply)


def task_unclaim(*, task_id: int, user: Any) -> HumanTask:
    """Give a claimed task back to its role."""

    def apply(txn: RunTxn, task: HumanTask) -> None:
        if claim_holder(task, txn.now) is None:
            raise Conflict(f"Task {task.pk} is not claimed.")
        task.claimed_by, task.claimed_at = None, None
        task.save(update_fields=["claimed_by", "claimed_at"])
        txn.audit(
            "task.unclaimed", step_name=task.step_name, status=task.status, data=_task_data(task)
        )

    return _decide(task_id, user, "unclaim", apply)


def task_claim_break(*, task_id: int, user: Any) -> HumanTask:
    """Staff release someone else's claim at once (a reviewer away, a claim left behind)."""
    if not (permissions.is_person(user) and user.is_staff):
        _refuse_staff_only(task_id, user, "break_claim", "Only staff may break a claim.")

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
            data=_task_data(task, claimed_by=holder.get_username()),
        )

    return _decide(task_id, user, "break_claim", apply)


def _refuse_staff_only(task_id: int, user: Any, action: str, message: str) -> None:
    """Audit a staff-only action tried by someone else on the task's run, then refuse it."""
    run_id = HumanTask.objects.filter(pk=task_id).values_list("run_id", flat=True).first()
    if run_id is None:
        raise NotFound(f"No task {task_id}.")
    person = permissions.is_person(user)
    with locked_run(run_id, actor=user if person else None) as txn:
        step_name = HumanTask.objects.filter(pk=task_id).values_list("step_name", flat=True)[0]
        txn.audit(
            "task.refused",
            step_name=step_name,
            error_message=message,
            data={"task": task_id, "action": action},
        )
    raise PermissionDenied(message)


def task_reassign(
    *, task_id: int, user: Any, assignee: str | None = None, role: str | None = None
) -> HumanTask:
    """Staff hand a task to another person or role; its new assignees are notified."""
    if not (permissions.is_person(user) and user.is_staff):
        _refuse_staff_only(task_id, user, "reassign", "Only staff may reassign tasks.")
    new_assignee = _user(assignee)
    if assignee and new_assignee is None:
        raise InvalidInput(
            f"No user {assignee!r}.", details=[{"field": "assignee", "message": "unknown user"}]
        )

    def apply(txn: RunTxn, task: HumanTask) -> None:
        task.assignee, task.assignee_role = new_assignee, _role(role)
        task.claimed_by, task.claimed_at = None, None
        task.save(update_fields=["assignee", "assignee_role", "claimed_by", "claimed_at"])
        txn.audit(
            "task.reassigned", step_name=task.step_name, status=task.status, data=_task_data(task)
        )
        notifications.notify_after_commit("task.opened", task)

    return _decide(task_id, user, "reassign", apply)


# --- deadlines ------------------------------------------------------------------------


def task_expire(*, task_id: int) -> bool:
    """Apply an overdue task's `on_timeout`; False when it was decided in time."""
    run_id = HumanTask.objects.filter(pk=task_id).values_list("run_id", flat=True).first()
    if run_id is None:
        return False
    with locked_run(run_id) as txn:
        task = (
            HumanTask.objects.select_for_update(of=("self",))
            .select_related("assignee_role")
            .get(pk=task_id)
        )
        if not task.is_open or task.due_at is None or task.due_at > txn.now:
            return False
        policy = task.on_timeout or "reject"
        if policy.startswith("escalate:"):
            group = _role(policy.split(":", 1)[1])
            Decision.objects.create(
                task=task, action=A.ESCALATE, data={"to": policy}, created_at=txn.now
            )
            task.assignee, task.assignee_role, task.claimed_by, task.due_at = (
                None,
                group,
                None,
                None,
            )
            task.save(update_fields=["assignee", "assignee_role", "claimed_by", "due_at"])
            txn.audit(
                "task.escalated",
                step_name=task.step_name,
                status=task.status,
                data=_task_data(task),
            )
            notifications.notify_after_commit("task.escalated", task)
            return True
        Decision.objects.create(
            task=task, action=A.EXPIRE, data={"on_timeout": policy}, created_at=txn.now
        )
        _close(task, T.EXPIRED, None, txn)
        txn.audit(
            "task.expired",
            step_name=task.step_name,
            status=task.status,
            data=_task_data(task, on_timeout=policy),
        )
        if policy == "approve":
            outputs: dict[str, Any] = {
                "decision": "approved",
                "approvers": [],
                "comment": "approved when the deadline passed",
                "comments": [],
                "data": None,
            }
            resolve_waiting(txn, task.step_name, status=StepRun.Status.SUCCEEDED, outputs=outputs)
        else:
            resolve_waiting(
                txn, task.step_name, status=StepRun.Status.REJECTED, error="the deadline passed"
            )
        notifications.notify_after_commit("task.expired", task)
        return True


def expire_overdue() -> int:
    """Apply `on_timeout` to every overdue open task (run by Celery beat)."""
    overdue = HumanTask.objects.filter(status=T.OPEN, due_at__lt=timezone.now()).values_list(
        "pk", flat=True
    )
    return sum(task_expire(task_id=task_id) for task_id in list(overdue))
