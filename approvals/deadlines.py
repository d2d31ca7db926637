"""Applying an overdue task's `on_timeout` (run by Celery beat)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from approvals import notifications, rollup
from approvals.guards import A, T, close, role_named, task_data
from approvals.models import Decision, HumanTask
from pipelines.models import StepRun
from pipelines.services.transitions import resolve_waiting
from pipelines.services.unit_of_work import locked_run


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
            group = role_named(policy.split(":", 1)[1])
            rollup.decided(
                organization_id=task.organization_id,
                task=task,
                action=A.ESCALATE,
                channel=Decision.Channel.DEADLINE,
                data={"to": policy},
                created_at=txn.now,
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
                data=task_data(task),
            )
            notifications.notify_after_commit("task.escalated", task)
            return True
        rollup.decided(
            organization_id=task.organization_id,
            task=task,
            action=A.EXPIRE,
            channel=Decision.Channel.DEADLINE,
            data={"on_timeout": policy},
            created_at=txn.now,
        )
        close(task, T.EXPIRED, None, txn)
        txn.audit(
            "task.expired",
            step_name=task.step_name,
            status=task.status,
            data=task_data(task, on_timeout=policy),
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
