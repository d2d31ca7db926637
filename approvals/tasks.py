"""Celery tasks of the approvals app."""

from __future__ import annotations

from celery import shared_task

from approvals import services


# Safe to run twice: each expiry locks the run and the task and re-checks the deadline.
@shared_task(name="approvals.tasks.expire_overdue")
def expire_overdue() -> int:
    return services.expire_overdue()
