"""Every change to a human task, each in its run's transaction with its audit entries.

Opening and closing tasks and the decisions live here; claims and deadlines in their own
modules, whose services this one re-exports, so callers use `approvals.services` alone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

from approvals import notifications, rollup
from approvals.claims import task_claim, task_claim_break, task_reassign, task_unclaim
from approvals.comments import task_comment
from approvals.deadlines import expire_overdue, task_expire
from approvals.delegations import delegation_clear, delegation_set
from approvals.guards import (
    A,
    AlreadyDecided,
    Apply,
    T,
    approvals_of,
    behalf_of,
    can_act,
    claim_holder,
    close,
    decide,
    role_named,
    task_data,
    user_named,
)
from approvals.models import Decision, HumanTask, TaskComment
from pipelines import engine, schemas
from pipelines.errors import InvalidInput
from pipelines.limits import bounds_problem
from pipelines.models import StepRun
from pipelines.services.transitions import resolve_waiting, rollback
from pipelines.services.unit_of_work import RunTxn, step_states
from pipelines.versions import version_spec

__all__ = [
    "AlreadyDecided",
    "approving",
    "can_act",
    "claim_holder",
    "delegation_clear",
    "delegation_set",
    "expire_overdue",
    "rejecting",
    "rollback_targets",
    "task_approve",
    "task_claim",
    "task_claim_break",
    "task_comment",
    "task_complete",
    "task_expire",
    "task_open",
    "task_reassign",
    "task_reject",
    "task_rollback",
    "task_unclaim",
    "tasks_cancel",
]


C = Decision.Channel


def _channel(channel: str) -> str:
    if channel not in C.values:
        raise ValueError(f"unknown decision channel {channel!r} (known: {', '.join(C.values)})")
    return channel


# --- opening and closing (called inside the pipelines transaction) ---------------------


def task_open(
    *, txn: RunTxn, step_run: StepRun, kind: str, config: dict[str, Any], reason: str = ""
) -> HumanTask:
    """Open the task that decides a waiting step; its assignees are notified after commit."""
    now = txn.now
    timeout = config.get("timeout_hours")
    remind = config.get("remind_before_hours")
    task = HumanTask.objects.create(
        organization_id=txn.run.organization_id,
        run=txn.run,
        pipeline_id=txn.version.pipeline_id,
        step_run=step_run,
        step_name=step_run.step_name,
        generation=step_run.generation,
        kind=kind,
        assignee=user_named(config.get("assignee")),
        assignee_role=role_named(config.get("assignee_role")),
        instructions=reason or config.get("instructions", ""),
        context=_context(txn, step_run.step_name, config.get("context")),
        form_schema=config.get("form_schema"),
        options=config.get("options"),
        quorum=config.get("quorum", 1),
        allow_self_approval=config.get("allow_self_approval", False),
        due_at=now + timedelta(hours=timeout) if timeout else None,
        remind_at=now + timedelta(hours=timeout - remind) if timeout and remind else None,
        on_timeout=config.get("on_timeout", "reject" if timeout else ""),
        created_at=now,
    )
    txn.audit(
        "task.opened",
        step_name=task.step_name,
        status=task.status,
        pause_reason=reason,
        data=task_data(task),
    )
    notifications.notify_after_commit("task.opened", task)
    return task


def tasks_cancel(*, txn: RunTxn, step_run_ids: list[int]) -> None:
    """Cancel the open tasks of steps the run no longer waits for (cancel, roll back)."""
    for task in HumanTask.objects.filter(step_run_id__in=step_run_ids, status=T.OPEN):
        close(task, T.CANCELLED, None, txn)
        txn.audit(
            "task.cancelled", step_name=task.step_name, status=task.status, data={"task": task.pk}
        )


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


# --- decisions ------------------------------------------------------------------------


def _behalf(txn: RunTxn, task: HumanTask, user: Any) -> tuple[Any, dict[str, Any]]:
    """Whom a delegate decides for (None: for themselves), and how the audit says so."""
    behalf = behalf_of(task, user, txn)
    return behalf, ({"on_behalf_of": behalf.get_username()} if behalf is not None else {})


def task_approve(*, task_id: int, user: Any, comment: str = "", channel: str = C.WEB) -> HumanTask:
    """One vote; the task completes when `quorum` distinct people approved."""
    return decide(task_id, user, A.APPROVE, approving(user=user, comment=comment, channel=channel))


def approving(*, user: Any, comment: str = "", channel: str = C.WEB) -> Apply:
    """The approval itself, for a task whose run is locked and whose guard said yes (by
    `task_approve`, or by a bulk decision for each task of its batch)."""

    def apply(txn: RunTxn, task: HumanTask) -> None:
        if task.kind not in (HumanTask.Kind.APPROVAL, HumanTask.Kind.PAUSE):
            raise InvalidInput(f"Task {task.pk} is a {task.kind} task: complete it instead.")
        behalf, says = _behalf(txn, task, user)
        earlier = approvals_of(task)
        vote = rollup.decided(
            organization_id=task.organization_id,
            task=task,
            user=user,
            action=A.APPROVE,
            comment=comment,
            channel=_channel(channel),
            on_behalf_of=behalf,
            created_at=txn.now,
        )
        votes = [*earlier, vote]
        done = len(votes) >= task.quorum
        txn.audit(
            "task.approved",
            step_name=task.step_name,
            status=T.COMPLETED if done else T.OPEN,
            data=task_data(
                task,
                votes=len(votes),
                quorum=task.quorum,
                comment=comment,
                channel=channel,
                **says,
            ),
        )
        if done:
            close(task, T.COMPLETED, user, txn)
            outputs = {
                "decision": "approved",
                "approvers": [v.user.get_username() for v in votes if v.user],
                "comment": comment,
                "comments": [v.comment for v in votes if v.comment],
                "data": None,
            }
            resolve_waiting(txn, task.step_name, status=StepRun.Status.SUCCEEDED, outputs=outputs)
            notifications.notify_after_commit(
                "task.decided",
                task,
                channel=channel,
                on_behalf_of=says.get("on_behalf_of", ""),
                txn=txn,
            )

    return apply


def task_reject(*, task_id: int, user: Any, comment: str, channel: str = C.WEB) -> HumanTask:
    """Veto: the step is rejected and the run ends `rejected`."""
    return decide(task_id, user, A.REJECT, rejecting(user=user, comment=comment, channel=channel))


def rejecting(*, user: Any, comment: str, channel: str = C.WEB) -> Apply:
    """The veto itself (see `approving`); a veto without a reason is refused at once."""
    if not comment.strip():
        raise InvalidInput(
            "Say why you reject.", details=[{"field": "comment", "message": "required"}]
        )

    def apply(txn: RunTxn, task: HumanTask) -> None:
        withdrawn = _vote_withdrawn(task, user)
        behalf, says = _behalf(txn, task, user)
        rollup.decided(
            organization_id=task.organization_id,
            task=task,
            user=user,
            action=A.REJECT,
            comment=comment,
            channel=_channel(channel),
            on_behalf_of=behalf,
            created_at=txn.now,
        )
        close(task, T.REJECTED, user, txn)
        txn.audit(
            "task.rejected",
            step_name=task.step_name,
            status=task.status,
            data=task_data(task, comment=comment, channel=channel, **withdrawn, **says),
        )
        resolve_waiting(txn, task.step_name, status=StepRun.Status.REJECTED, error=comment)
        notifications.notify_after_commit(
            "task.decided",
            task,
            channel=channel,
            on_behalf_of=says.get("on_behalf_of", ""),
            txn=txn,
        )

    return apply


def _vote_withdrawn(task: HumanTask, user: Any) -> dict[str, Any]:
    """A veto after one's own approval is allowed: the vote stays in the history, and the
    veto's audit entry names it, so the trail shows the reviewer changed their mind."""
    vote = next((v for v in approvals_of(task) if v.user_id == user.pk), None)
    return {"withdraws_approval": vote.pk} if vote is not None else {}


def rollback_targets(task: HumanTask) -> list[str]:
    """Steps a reviewer may roll the run back to from this task (a read: no lock)."""
    run = task.run
    spec = version_spec(run.pipeline_version_id)
    return engine.rollback_targets(spec, task.step_name, step_states(run.pk))


def task_rollback(
    *, task_id: int, user: Any, to_step: str, comment: str = "", channel: str = C.WEB
) -> HumanTask:
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
        behalf, says = _behalf(txn, task, user)
        rollup.decided(
            organization_id=task.organization_id,
            task=task,
            user=user,
            action=A.ROLLBACK,
            comment=comment,
            rollback_to=to_step,
            channel=_channel(channel),
            on_behalf_of=behalf,
            created_at=txn.now,
        )
        close(task, T.CANCELLED, user, txn)
        txn.audit(
            "task.rolled_back",
            step_name=task.step_name,
            status=task.status,
            data=task_data(
                task, to_step=to_step, comment=comment, channel=channel, **withdrawn, **says
            ),
        )
        rollback(txn, to_step, comment=comment, origin=task.step_name)
        notifications.notify_after_commit(
            "task.decided",
            task,
            channel=channel,
            on_behalf_of=says.get("on_behalf_of", ""),
            txn=txn,
        )

    return decide(task_id, user, A.ROLLBACK, apply)


def task_complete(
    *,
    task_id: int,
    user: Any,
    data: Any = None,
    choice: str | None = None,
    channel: str = C.WEB,
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
        behalf, says = _behalf(txn, task, user)
        rollup.decided(
            organization_id=task.organization_id,
            task=task,
            user=user,
            action=action,
            data=outputs,
            channel=_channel(channel),
            on_behalf_of=behalf,
            created_at=txn.now,
        )
        close(task, T.COMPLETED, user, txn)
        txn.audit(
            f"task.{outputs['decision']}",
            step_name=task.step_name,
            status=task.status,
            outputs=outputs,
            data=task_data(task, channel=channel, **says),
        )
        resolve_waiting(txn, task.step_name, status=StepRun.Status.SUCCEEDED, outputs=outputs)
        notifications.notify_after_commit(
            "task.decided",
            task,
            channel=channel,
            on_behalf_of=says.get("on_behalf_of", ""),
            txn=txn,
        )

    action = A.SUBMIT if choice is None else A.CHOOSE
    return decide(task_id, user, action, apply)


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


# --- retention (pipelines/services/retention.py calls these through its hooks) ---------


def tasks_erase(run_ids: list[int]) -> None:
    """Empty what the runs' tasks showed and what people wrote on them; who decided what,
    and when, stays."""
    HumanTask.objects.filter(run_id__in=run_ids).update(context={})
    TaskComment.objects.filter(task__run_id__in=run_ids).update(body="", mentions=[])
    Decision.objects.filter(task__run_id__in=run_ids).update(data=None, comment="")


def tasks_purge(run_ids: list[int]) -> None:
    """Delete the runs' tasks and their decisions (before the runs' steps go)."""
    Decision.objects.filter(task__run_id__in=run_ids).delete()
    TaskComment.objects.filter(task__run_id__in=run_ids).delete()
    HumanTask.objects.filter(run_id__in=run_ids).delete()
