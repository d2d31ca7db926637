"""Fixtures for human-task tests: named users, a reviewers group, driving runs in-process."""

from __future__ import annotations

import time

from approvals.models import HumanTask
from pipelines import services
from pipelines.models import Run, StepRun


def drive(run: Run) -> Run:
    """Execute queued steps in this process until the run waits or ends (no broker).

    Where a live worker also takes the run's messages (a test with the `worker` fixture),
    a step it claimed first is waited for (up to 30 s) rather than taken for the end.
    """
    services.run_advance(run_id=run.pk)
    deadline = time.monotonic() + 30
    while True:
        queued = list(StepRun.objects.filter(run=run, status="queued").values_list("pk", flat=True))
        if not queued:
            elsewhere = StepRun.objects.filter(run=run, status="running").exists()
            if not elsewhere or time.monotonic() > deadline:
                break
            time.sleep(0.05)
            continue
        for step_run_id in queued:
            services.step_execute(step_run_id=step_run_id)
    run.refresh_from_db()
    return run


def open_task(run: Run) -> HumanTask:
    return HumanTask.objects.get(run=run, status=HumanTask.Status.OPEN)
