"""Celery tasks of the approvals app."""

from __future__ import annotations

from celery import Task, shared_task

from approvals import services, webhooks


# Safe to run twice: each expiry locks the run and the task and re-checks the deadline.
@shared_task(name="approvals.tasks.expire_overdue")
def expire_overdue() -> int:
    return services.expire_overdue()


# One attempt per run of the task; the delivery row counts attempts and is claimed with a
# conditional update, so a redelivered message repeats at most one POST, and the event id
# in the body stays the same, letting the receiver drop the repeat.
@shared_task(
    name="approvals.tasks.deliver_webhook",
    bind=True,
    max_retries=None,  # bounded by FIREFLY_WEBHOOK_MAX_ATTEMPTS on the delivery row
    soft_time_limit=120,
    time_limit=150,
)
def deliver_webhook(self: Task, delivery_id: int) -> None:
    countdown = webhooks.delivery_attempt(delivery_id=delivery_id)
    if countdown is not None:
        raise self.retry(countdown=countdown)


# Safe to run twice: each delivery is sent again by a conditional update, once.
@shared_task(name="approvals.tasks.sweep_webhooks")
def sweep_webhooks() -> int:
    return webhooks.deliveries_sweep()
