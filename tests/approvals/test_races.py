"""Real races: threads released together by a barrier, each on its own connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from approvals import services
from approvals.models import HumanTask
from approvals.services import AlreadyDecided
from pipelines import audit
from pipelines.models import AuditEntry, Run
from tests.approvals.conftest import open_task
from tests.approvals.test_services import waiting_run


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once in threads; each returns its value or its exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[index] = call()
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def chain_is_intact(run: Run) -> bool:
    entries = list(AuditEntry.objects.filter(run=run).order_by("seq"))
    run.refresh_from_db()
    return audit.verify_chain(f"run {run.pk}", entries, (run.audit_seq, run.audit_head)) is None


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
