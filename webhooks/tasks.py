"""Celery tasks of the webhooks app (named as they were in the approvals app)."""

from __future__ import annotations

from celery import Task, shared_task

from webhooks import services


# One attempt per run of the task; the delivery row counts attempts and is claimed with a
# conditional update, so a redelivered message repeats at most one POST, and the event id
# in the body stays the same, letting the receiver drop the repeat.
@shared_task(
    name=services.DELIVER_TASK,
    bind=True,
    max_retries=None,  # bounded by FIREFLY_WEBHOOK_MAX_ATTEMPTS on the delivery row
    soft_time_limit=120,
    time_limit=150,
)
def deliver_webhook(self: Task, delivery_id: int) -> None:
    countdown = services.delivery_attempt(delivery_id=delivery_id)
    if countdown is not None:
        raise self.retry(countdown=countdown)


# Safe to run twice: each delivery is sent again by a conditional update, once.
@shared_task(name=services.SWEEP_TASK)
def sweep_webhooks() -> int:
    return services.deliveries_sweep()
