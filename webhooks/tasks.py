"""Celery tasks of the webhooks app (named as they were in the approvals app)."""

from __future__ import annotations

from celery import Task, shared_task

from webhooks import services


# One attempt per run of the task, and the message names it: the delivery row's attempt
# count is claimed with a conditional update from `attempt - 1`, so a duplicated or
# redelivered message finds its attempt taken and sends nothing. A worker that died
# mid-request leaves the delivery to the sweep, which sends the next attempt; the event
# id in the body stays the same, letting the receiver drop a repeat. A message from
# before attempts were named counts as attempt 1.
@shared_task(
    name=services.DELIVER_TASK,
    bind=True,
    max_retries=None,  # bounded by FIREFLY_WEBHOOK_MAX_ATTEMPTS on the delivery row
    soft_time_limit=120,
    time_limit=150,
)
def deliver_webhook(self: Task, delivery_id: int, attempt: int = 1) -> None:
    countdown = services.delivery_attempt(delivery_id=delivery_id, attempt=attempt)
    if countdown is not None:
        raise self.retry(kwargs={"attempt": attempt + 1}, countdown=countdown)


# Safe to run twice: each delivery is sent again by a conditional update, once.
@shared_task(name=services.SWEEP_TASK)
def sweep_webhooks() -> int:
    return services.deliveries_sweep()
