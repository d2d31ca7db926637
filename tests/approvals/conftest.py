"""Fixtures for human-task tests: named users, a reviewers group, driving runs in-process."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from approvals.models import HumanTask
from pipelines import services
from pipelines.models import Run, StepRun


@pytest.fixture
def users(db: Any, django_user_model: Any) -> dict[str, Any]:
    """starter runs pipelines; r1..r3 are reviewers; outsider is in no group; boss is staff."""
    reviewers = Group.objects.create(name="reviewers")
    made = {}
    for name in ("starter", "r1", "r2", "r3", "outsider", "boss"):
        made[name] = django_user_model.objects.create_user(
            name, email=f"{name}@example.com", password="x", is_staff=name == "boss"
        )
    for name in ("r1", "r2", "r3"):
        made[name].groups.add(reviewers)
    return made


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
