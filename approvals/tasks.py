"""Celery tasks of the approvals app."""

from __future__ import annotations

from celery import shared_task

from approvals import digests, services


# Safe to run twice: each expiry locks the run and the task and re-checks the deadline.
@shared_task(name="approvals.tasks.expire_overdue")
def expire_overdue() -> int:
    return services.expire_overdue()


# Safe to run twice: a reminder is recorded once per task before it is sent, and a
# digest locks its person's preferences and marks what it sends.
@shared_task(name="approvals.tasks.send_notifications")
def send_notifications() -> dict[str, int]:
    return {"reminders": digests.reminders_send(), "digests": digests.digests_send()}
