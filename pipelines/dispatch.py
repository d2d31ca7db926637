"""Celery messages the services send, by task name, once their transaction commits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from kombu import Queue

from firefly_site.celery import app

# The names are the contract with queued messages and the beat schedule: keep them.
ADVANCE_RUN = "pipelines.tasks.advance_run"
EXECUTE_STEP = "pipelines.tasks.execute_step"
FINISH_RUN = "pipelines.tasks.finish_run"
SETTLE_HANDOFF = "pipelines.tasks.settle_handoff"
RELAY_OUTBOX = "pipelines.tasks.relay_outbox"


def after_commit(send: Callable[[], Any]) -> None:
    """Send once the transaction commits; a broker that cannot take the message is logged,
    not raised. What was committed stands and the reaper sends its messages again (the
    database, not the broker, says what is due): raising would tell the caller that,
    say, a run it started was not, and a retry would start it twice."""
    transaction.on_commit(send, robust=True)


def advance_run(run_id: int) -> None:
    after_commit(lambda: app.send_task(ADVANCE_RUN, (run_id,)))


def finish_run(run_id: int) -> None:
    after_commit(lambda: app.send_task(FINISH_RUN, (run_id,)))


def settle_handoff(child_run_id: int) -> None:
    after_commit(lambda: app.send_task(SETTLE_HANDOFF, (child_run_id,)))


def relay_outbox() -> None:
    """Send a relay message once this transaction (which wrote outbox rows) commits.

    A duplicate is harmless: the relay locks each row and skips those relayed. One
    message per transaction is enough, though, and a transaction deciding many tasks
    asks once per task. A relay already asked for in this transaction was asked in it
    or in one of its open savepoints, so it survives whenever this one would: asking
    again adds nothing.
    """
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        callback is _send_relay for _, callback, _ in connection.run_on_commit
    ):
        return
    after_commit(_send_relay)


def _send_relay() -> None:
    app.send_task(RELAY_OUTBOX)


def execute_steps(steps: list[tuple[int, str]], countdown: float = 0) -> None:
    """Send `execute_step` for each (step run id, queue) once this transaction commits.

    The queue is the step's `queue` field ("": Celery's default queue).
    """

    def send() -> None:
        for step_run_id, queue in steps:
            route: dict[str, Any] = {"queue": queue} if queue else {}
            app.send_task(EXECUTE_STEP, (step_run_id,), countdown=countdown, **route)

    # One callback for all: with the broker down the first send fails and the others are
    # left to the reaper, instead of each waiting out the publish retries in turn.
    if steps:
        after_commit(send)


def broker_backlog(queue: str) -> int:
    """How many messages wait in a broker queue ("": the default queue); 0 if unknown."""
    name = queue or app.conf.task_default_queue
    try:
        with app.connection_for_read() as broker:
            # (queue, message_count, consumer_count); kombu's type stubs say otherwise.
            declared: Any = Queue(name)(broker).queue_declare(passive=True)
            return int(declared.message_count)
    except Exception:  # an empty queue does not exist on Redis; or the broker cannot say
        return 0
