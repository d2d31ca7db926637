"""The reaper: named recoveries from dead workers, lost messages and stalled runs."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from firefly_site import metrics
from pipelines import dispatch
from pipelines.models import HandoffEnvelope, Heartbeat, Run, StepRun
from pipelines.services import transitions
from pipelines.services.handoffs import handoff_settle
from pipelines.services.outbox import outbox_sweep
from pipelines.services.runs import run_advance
from pipelines.services.unit_of_work import locked_run
from pipelines.versions import version_spec

log = logging.getLogger(__name__)

S = StepRun.Status
R = Run.Status

LOST_WORKER = "worker lost: the step's lease expired"


@dataclass
class ReapReport:
    lost: int = 0
    resent: int = 0
    waiting: int = 0  # queued steps left alone: their queue still holds as many messages
    advanced: int = 0
    finishing: int = 0
    settled: int = 0
    relayed: int = 0  # outbox events no on-commit relay took


def reap() -> ReapReport:
    """Recover from dead workers, lost messages and stalled runs (run by Celery beat).

    Webhook deliveries have their own sweep (`sweep_webhooks`); outbox events not
    relayed after FIREFLY_OUTBOX_RELAY_AFTER_S are relayed here.
    """
    report = ReapReport()
    now = timezone.now()
    record_heartbeat(Heartbeat.REAPER, now)
    stale_queue = now - timedelta(seconds=settings.FIREFLY_REQUEUE_AFTER_S)
    report.lost = recover_expired_leases(now)
    report.resent, report.waiting = resend_lost_messages(now, stale_queue)
    report.advanced = advance_stalled_runs(stale_queue)
    report.finishing = resend_lost_finishes(now)
    report.settled = settle_lost_handoffs()
    report.relayed = outbox_sweep()
    for kind in ("lost", "resent", "advanced", "finishing", "settled", "relayed"):
        count = getattr(report, kind)
        if count:
            metrics.RECOVERIES.labels(kind).inc(count)
    if report.lost or report.resent or report.settled:
        log.warning("reaper: %s", report)
    return report


def record_heartbeat(name: str, now: datetime) -> None:
    """One upsert: beat's pulse, read by /readyz. First, so a recovery that fails does
    not make a live beat look dead (a liveness record, not a state change: no audit)."""
    Heartbeat.objects.bulk_create(
        [Heartbeat(name=name, seen_at=now)],
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=["seen_at"],
    )


def recover_expired_leases(now: datetime) -> int:
    """Steps whose worker died (their lease ran out): failed as lost, and retried."""
    expired = StepRun.objects.filter(status=S.RUNNING, lease_until__lt=now).values_list(
        "pk", "run_id"
    )
    return sum(recover_lost_step(run_id, step_run_id) for step_run_id, run_id in expired)


def recover_lost_step(run_id: int, step_run_id: int) -> int:
    with locked_run(run_id) as txn:
        name = next((n for n, st in txn.states.items() if st.id == step_run_id), None)
        if name is None or txn.states[name].status != S.RUNNING:
            return 0
        state = txn.states[name]
        if not StepRun.objects.filter(
            pk=step_run_id, status=S.RUNNING, lease_until__lt=txn.now
        ).update(status=S.FAILED, finished_at=txn.now, lease_until=None, error=LOST_WORKER):
            return 0
        txn.set_state(name, state.id, S.FAILED, state.generation, state.attempt)
        transitions.step_failed(txn, name, error=LOST_WORKER, lost=True)
        return 1


def resend_lost_messages(now: datetime, stale_queue: datetime) -> tuple[int, int]:
    """Queued steps nobody took: sent again, unless their queue still holds the messages.

    Returns (resent, left waiting).
    """
    resent = waiting = 0
    stale_steps: dict[str, list[int]] = defaultdict(list)
    for step_run_id, version_id, name in StepRun.objects.filter(
        status=S.QUEUED, queued_at__lt=stale_queue
    ).values_list("pk", "run__pipeline_version_id", "step_name"):
        stale_steps[version_spec(version_id).by_name[name].queue].append(step_run_id)
    for queue, ids in stale_steps.items():
        if dispatch.broker_backlog(queue) >= len(ids):
            # Their messages are likely still there, behind busy workers or waiting for
            # a worker of that queue: sending more would only pile up duplicates.
            waiting += len(ids)
            continue
        for step_run_id in ids:
            # Re-sending is safe: a duplicate finds the step no longer queued.
            if StepRun.objects.filter(pk=step_run_id, status=S.QUEUED).update(queued_at=now):
                with transaction.atomic():
                    dispatch.execute_steps([(step_run_id, queue)])
                resent += 1
    return resent, waiting


def advance_stalled_runs(stale_queue: datetime) -> int:
    """Runs with nothing queued or running (a lost advance message): advanced."""
    busy = StepRun.objects.filter(run=OuterRef("pk"), status__in=[S.QUEUED, S.RUNNING])
    stalled = (
        Run.objects.filter(Q(status=R.RUNNING) | Q(status=R.PENDING, created_at__lt=stale_queue))
        .filter(~Exists(busy), finishing="")
        .values_list("pk", flat=True)
    )
    advanced = 0
    for run_id in stalled:
        run_advance(run_id=run_id)
        advanced += 1
    return advanced


def resend_lost_finishes(now: datetime) -> int:
    """on_finish whose message was lost or whose worker died (its lease expired).

    A duplicate message is harmless: only one worker can hold the finish lease.
    """
    finishing = (
        Run.objects.filter(status=R.RUNNING)
        .exclude(finishing="")
        .filter(Q(finish_lease_until__isnull=True) | Q(finish_lease_until__lt=now))
        .values_list("pk", flat=True)
    )
    sent = 0
    for run_id in finishing:
        with transaction.atomic():
            dispatch.finish_run(run_id)
        sent += 1
    return sent


def settle_lost_handoffs() -> int:
    """Waiting handoff steps whose child run finished but were not told (message lost)."""
    done_children = HandoffEnvelope.objects.filter(
        wait=True, acknowledged_at__isnull=True, child_run__status__in=Run.FINISHED
    ).values_list("child_run_id", flat=True)
    return sum(handoff_settle(child_run_id=child_run_id) for child_run_id in done_children)
