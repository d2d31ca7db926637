"""Celery tasks: thin wrappers that take ids and call services."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from pipelines import anchors, services
from pipelines.errors import DATABASE_GONE

log = logging.getLogger(__name__)


# Redelivery is safe for all of them: advance_run recomputes from the locked run,
# execute_step moves its step out of `queued` with a conditional update (a duplicate
# finds it taken and returns), finish_run needs the run's finish lease, settle_handoff
# checks that the step still waits, and the reaper's recoveries are conditional.
# The names are those pipelines.dispatch sends. So each of them is delivered again, with a
# growing pause, when the database goes away under it, rather than waiting for the reaper.
RETRY_WHILE_DATABASE_AWAY: dict[str, Any] = {
    "autoretry_for": DATABASE_GONE,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 12,
}


@shared_task(name="pipelines.tasks.advance_run", **RETRY_WHILE_DATABASE_AWAY)
def advance_run(run_id: int) -> None:
    services.run_advance(run_id=run_id)


@shared_task(name="pipelines.tasks.execute_step", **RETRY_WHILE_DATABASE_AWAY)
def execute_step(step_run_id: int) -> None:
    services.step_execute(step_run_id=step_run_id)


@shared_task(name="pipelines.tasks.reap")
def reap() -> None:
    services.reap()


@shared_task(name="pipelines.tasks.finish_run", **RETRY_WHILE_DATABASE_AWAY)
def finish_run(run_id: int) -> None:
    services.run_finalize(run_id=run_id)


@shared_task(name="pipelines.tasks.settle_handoff", **RETRY_WHILE_DATABASE_AWAY)
def settle_handoff(child_run_id: int) -> None:
    services.handoff_settle(child_run_id=child_run_id)


# Safe to run twice, or in parallel: each outbox row is locked and relayed once.
@shared_task(name="pipelines.tasks.relay_outbox")
def relay_outbox() -> None:
    services.outbox_relay()


# Safe to run twice, or in parallel: the sequencer and the anchoring each lock the
# ledger's one-row state, and a store skips an anchor it already holds. A store that
# fails is logged; its anchor is written again at the next beat, before any new one.
@shared_task(name="pipelines.tasks.anchor_audit")
def anchor_audit() -> None:
    try:
        anchors.anchor_audit()
    except anchors.AnchorStoreError:
        log.exception("audit anchor not written; it is written again at the next beat")


# Safe to run twice, or in parallel: each batch locks its runs with SKIP LOCKED, and a run
# already erased or purged is no longer a candidate.
@shared_task(name="pipelines.tasks.apply_retention")
def apply_retention() -> None:
    services.retention_apply()
