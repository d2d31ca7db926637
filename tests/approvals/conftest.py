"""Fixtures for human-task tests: named users, a reviewers group, driving runs in-process."""

from __future__ import annotations

from approvals.models import HumanTask
from pipelines import services
from pipelines.models import Run, StepRun


def drive(run: Run) -> Run:
    """Execute queued steps in this process until the run waits or ends (no broker)."""
    services.run_advance(run_id=run.pk)
    while True:
        queued = list(StepRun.objects.filter(run=run, status="queued").values_list("pk", flat=True))
        if not queued:
            break
        for step_run_id in queued:
            services.step_execute(step_run_id=step_run_id)
    run.refresh_from_db()
    return run


def open_task(run: Run) -> HumanTask:
    return HumanTask.objects.get(run=run, status=HumanTask.Status.OPEN)
