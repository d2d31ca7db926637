"""Read queries for the reviewer pages: the inbox and one task with its history."""

from __future__ import annotations

from typing import Any

from django.db.models import F, Q, QuerySet

from approvals.models import Decision, HumanTask


def for_user(user: Any) -> Q:
    """Tasks for this user: assigned to them or one of their roles (superusers: all)."""
    if user.is_superuser:
        return Q()
    # The groups subquery keeps "assigned to me or to one of my roles" one SQL statement.
    return Q(assignee=user) | Q(assignee_role__in=user.groups.values("pk"))


def inbox_tasks(
    user: Any, *, pipeline: str = "", kind: str = "", sort: str = "due"
) -> QuerySet[HumanTask]:
    """Open tasks the user may act on (superusers: all), ready to list without more queries."""
    tasks = (
        HumanTask.objects.filter(for_user(user), status=HumanTask.Status.OPEN)
        .select_related(
            "run__pipeline_version__pipeline", "claimed_by", "assignee", "assignee_role"
        )
        .defer(
            "context", "form_schema", "run__inputs", "run__output", "run__pipeline_version__spec"
        )
    )
    if pipeline:
        tasks = tasks.filter(run__pipeline_version__pipeline__name=pipeline)
    if kind:
        tasks = tasks.filter(kind=kind)
    if sort == "new":
        return tasks.order_by("-created_at", "-id")
    return tasks.order_by(F("due_at").asc(nulls_last=True), "created_at", "id")


def open_task_count(user: Any) -> int:
    return HumanTask.objects.filter(for_user(user), status=HumanTask.Status.OPEN).count()


def tasks() -> QuerySet[HumanTask]:
    """Tasks newest first, with the names the API shows (one query for a page)."""
    return HumanTask.objects.select_related(
        "run__pipeline_version__pipeline", "assignee", "assignee_role", "claimed_by", "decided_by"
    ).order_by("-created_at", "-id")


def task_detail(task_id: int) -> HumanTask | None:
    return (
        HumanTask.objects.select_related(
            "run__pipeline_version__pipeline",
            "run__created_by",
            "assignee",
            "assignee_role",
            "claimed_by",
            "decided_by",
        )
        .filter(pk=task_id)
        .first()
    )


def task_decisions(task: HumanTask) -> QuerySet[Decision]:
    return task.decisions.select_related("user").order_by("created_at", "id")


def run_open_tasks(run_id: int) -> list[dict[str, Any]]:
    """A run's open tasks, for its unsettled work (pipelines.services.finishing)."""
    rows = HumanTask.objects.filter(run_id=run_id, status=HumanTask.Status.OPEN).values(
        "id", "step_name", "kind", "due_at"
    )
    return [
        {"id": r["id"], "step": r["step_name"], "kind": r["kind"], "due_at": r["due_at"]}
        for r in rows
    ]
