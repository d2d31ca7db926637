"""Real races between human decisions and deadlines (helpers in tests/races.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import services
from approvals.models import HumanTask
from approvals.services import AlreadyDecided
from pipelines.models import AuditEntry
from tests.approvals.conftest import open_task
from tests.approvals.test_services import waiting_run
from tests.races import chain_is_intact, race


@pytest.mark.parametrize("attempt", range(3))
def test_a_decision_racing_the_deadline_gets_one_outcome(transactional_db, users, attempt):
    run = waiting_run(users, timeout_hours=1)
    task = open_task(run)
    HumanTask.objects.filter(pk=task.pk).update(due_at=timezone.now() - timedelta(minutes=1))

    approved, expired = race(
        lambda: services.task_approve(task_id=task.pk, user=users["r1"]),
        lambda: services.task_expire(task_id=task.pk),
    )
    task.refresh_from_db()
    if task.status == HumanTask.Status.COMPLETED:  # the reviewer won
        assert isinstance(approved, HumanTask)
        assert expired is False
        assert not AuditEntry.objects.filter(run=run, event="task.expired").exists()
    else:  # the deadline won
        assert task.status == HumanTask.Status.EXPIRED
        assert expired is True
        assert isinstance(approved, AlreadyDecided)
        assert not AuditEntry.objects.filter(run=run, event="task.approved").exists()
    assert (
        AuditEntry.objects.filter(run=run, event="step.succeeded", step_name="review").count()
        + (AuditEntry.objects.filter(run=run, event="step.rejected", step_name="review").count())
        == 1
    )
    assert chain_is_intact(run)
