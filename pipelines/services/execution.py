"""Executing steps: claim, call the handler under its timeout, commit the outcome."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection
from django.utils import timezone

from firefly_site import logs
from orgs import rls
from pipelines import dispatch, fastpath
from pipelines.errors import DATABASE_GONE
from pipelines.models import AuditEntry, Checkpoint, StepRun
from pipelines.services import handoffs, transitions
from pipelines.services.handlers import Outcome, call_handler
from pipelines.services.hooks import pause_hooks
from pipelines.services.unit_of_work import RunTxn, Snapshot, StaleRun, emit_event, locked_run
from pipelines.versions import version_info, version_spec

log = logging.getLogger(__name__)

S = StepRun.Status


@dataclass
class Started:
    """A step this worker moved to running, and what it knew of the run at that commit."""

    step: StepRun
    snapshot: Snapshot | None


def step_begin(*, step_run_id: int) -> Started | None:
    """Claim a queued step for this worker; None when another delivery already took it.

    The claim is a lease, not an outcome: it takes no run lock, so parallel branches
    start without queueing behind each other. The attempt's audit entry is written
    when it ends (its outcome, or `step.lost`) and records when it started.
    """
    now = timezone.now()
    lease_until = now + timedelta(seconds=settings.FIREFLY_STEP_LEASE_S)
    # The conditional update is the guard: a duplicate or late message finds the step
    # no longer queued and changes nothing.
    claimed = _claim_through_outage(step_run_id, now, lease_until)
    if claimed is None:
        return None
    step, pipeline = claimed
    emit_event(
        "step.started",
        run_id=step.run.pk,
        pipeline=pipeline,
        organization_id=step.run.organization_id,
        step=step.step_name,
        status=S.RUNNING,
        attempt=step.attempt,
    )
    return Started(step, None)


def step_execute(*, step_run_id: int) -> None:
    """Run a queued step, commit its outcome, and go on with a lone ready successor."""
    started = step_begin(step_run_id=step_run_id)
    while started is not None:
        step = started.step
        with logs.bound(
            run_id=step.run.pk,
            step=step.step_name,
            step_run_id=step.pk,
            trace_id=step.run.trace_id,
        ):
            outcome = call_handler(step)
            started = _finish_through_outage(started, outcome)


# How long a worker holds a claim or an outcome while the database is away (at least a
# step's lease): a restart or a failover costs the step a wait, not its attempt.
OUTAGE_WAIT_S = 60.0

T = TypeVar("T")


def _through_outage(attempt: Callable[[bool], T], enter: Callable[[], None], doing: str) -> T:
    """`attempt(again)` until the database answers. Before each new try the broken
    connection is dropped and the new one held to the organization again (`enter`: the
    scope was a setting of the old session); `again` tells the attempt to first ask
    whether the last try committed after all, unanswered."""
    deadline = time.monotonic() + max(settings.FIREFLY_STEP_LEASE_S, OUTAGE_WAIT_S)
    pause, again = 0.1, False
    while True:
        try:
            if again:
                with contextlib.suppress(*DATABASE_GONE):
                    connection.close()
                enter()
            return attempt(again)
        except DATABASE_GONE:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("database away; %s again in %.1f s", doing, pause, exc_info=True)
            time.sleep(pause)
            pause, again = min(pause * 2, 2.0), True


def _finish_through_outage(started: Started, outcome: Outcome) -> Started | None:
    """step_finish, through an outage. A try that committed unanswered is found by its
    entry: then its successor is the one that commit started. Otherwise the outcome is
    committed again, fenced by the attempt like any outcome (a step handed on meanwhile
    drops it, audited)."""

    def finish(again: bool) -> Started | None:
        if not again:
            return step_finish(started=started, outcome=outcome)
        committed, successor = _committed_before(started.step, outcome)
        if committed:
            return successor
        # The failed try changed the snapshot in memory: read the run afresh.
        return step_finish(started=Started(started.step, None), outcome=outcome)

    enter = partial(rls.enter, started.step.run.organization_id)
    return _through_outage(finish, enter, "the outcome is committed")


def _claim_through_outage(
    step_run_id: int, now: datetime, lease_until: datetime
) -> tuple[StepRun, str] | None:
    """The claim and what a step needs of its pipeline, through an outage: claiming again
    with the same instant takes back a claim that committed unanswered."""

    def claim(again: bool) -> tuple[StepRun, str] | None:
        step = fastpath.claim(step_run_id, now, lease_until)
        if step is None:
            return None
        return step, version_info(step.run.pipeline_version_id).pipeline_name

    enter = partial(rls.enter_row, StepRun._meta.db_table, step_run_id)
    return _through_outage(claim, enter, "the step is claimed")


def _committed_before(step: StepRun, outcome: Outcome) -> tuple[bool, Started | None]:
    """Whether this attempt's outcome is in the chain already (its entry carries the
    outcome's own end time), and the step that same transaction started for this worker.
    (The run's finish, relay and webhooks of that commit are left to the reaper's sweeps.)"""
    entry = (
        AuditEntry.objects.filter(
            run_id=step.run_id, step_name=step.step_name, completed_at=outcome.finished_at
        )
        .exclude(event="step.outcome_dropped")
        .only("created_at")
        .first()
    )
    if entry is None:
        return False, None
    # Its messages were to go out after the commit, which the broken connection never
    # reported: send them now (a duplicate finds its step taken and does nothing).
    spec = version_spec(step.run.pipeline_version_id)
    queued = StepRun.objects.filter(
        run_id=step.run_id, status=S.QUEUED, queued_at=entry.created_at
    ).values_list("pk", "step_name")
    dispatch.execute_steps([(pk, spec.by_name[name].queue) for pk, name in queued])
    successor = (
        StepRun.objects.filter(run_id=step.run_id, status=S.RUNNING, started_at=entry.created_at)
        .exclude(pk=step.pk)
        .first()
    )
    if successor is None:
        return True, None
    successor.run = step.run
    return True, Started(successor, None)


def step_finish(*, started: Started, outcome: Outcome) -> Started | None:
    """Commit a step's outcome with its checkpoint and audit entry.

    Returns the next step to run in this worker when exactly one automatic step became
    ready. An outcome that arrives after the step was cancelled, rolled back or given to
    another worker (lease expired) is audited and dropped.
    """
    if started.snapshot is not None:
        try:
            with locked_run(started.step.run.pk, known=started.snapshot) as txn:
                step = commit_outcome(txn, started.step, outcome)
            return Started(step, txn.snapshot()) if step else None
        except StaleRun:
            pass  # someone else changed the run: commit under its lock
    return _outcomes.commit(started, outcome)


@dataclass(eq=False)
class _Pending:
    started: Started
    outcome: Outcome
    done: bool = False
    next: Started | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class _RunQueue:
    turn: threading.Lock = field(default_factory=threading.Lock)
    pending: list[_Pending] = field(default_factory=list)
    users: int = 0


class OutcomeQueue:
    """Commits the outcomes that threads of this process hold for one run together.

    Outcomes of parallel steps arrive at once and each needs the run's lock. Rather
    than queueing for it one by one, each thread adds its outcome here and waits for
    its turn; whoever's turn it is takes every outcome added by then (its own among
    them) into one transaction. The others find theirs committed when their turn
    comes: one lock, one round trip and one commit for the lot.
    """

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.runs: dict[int, _RunQueue] = {}

    def commit(self, started: Started, outcome: Outcome) -> Started | None:
        run_id = started.step.run.pk
        mine = _Pending(started, outcome)
        with self.mutex:
            queue = self.runs.setdefault(run_id, _RunQueue())
            queue.pending.append(mine)
            queue.users += 1
        try:
            with queue.turn:
                if not mine.done:
                    self._commit_pending(run_id, queue)
        finally:
            with self.mutex:
                queue.users -= 1
                if not queue.users:
                    del self.runs[run_id]
        if mine.error is not None:
            raise mine.error
        return mine.next

    def _commit_pending(self, run_id: int, queue: _RunQueue) -> None:
        # Taken before the run is locked and its steps read: each of these steps was
        # claimed before then, so the read shows it running. (One claimed later would
        # look still queued to this transaction, and its outcome would be dropped.)
        with self.mutex:
            batch, queue.pending = queue.pending, []
        try:
            with locked_run(run_id) as txn:
                steps = [commit_outcome(txn, p.started.step, p.outcome) for p in batch]
        except BaseException as exc:
            for pending in batch:
                pending.error, pending.done = exc, True
            return
        snapshot = txn.snapshot()
        for pending, step in zip(batch, steps, strict=True):
            pending.next, pending.done = Started(step, snapshot) if step else None, True


_outcomes = OutcomeQueue()


def commit_outcome(txn: RunTxn, step: StepRun, outcome: Outcome) -> StepRun | None:
    """Write one attempt's outcome; returns a successor this worker runs next, if any."""
    name = step.step_name
    spec_step = txn.spec.by_name[name]
    # Under the run lock the states are authoritative: a step cancelled, rolled back or
    # handed to another worker (lease expired) is no longer this running attempt.
    current = txn.states.get(name)
    if current != (step.pk, S.RUNNING, step.generation, step.attempt) or txn.run.is_finished:
        txn.audit(
            "step.outcome_dropped",
            step_name=name,
            status=_outcome_status(outcome),
            outputs=outcome.outputs,
            error_message=outcome.error,
            started_at=outcome.started_at,
            completed_at=outcome.finished_at,
            data={"reason": "the step was no longer running", "attempt": step.attempt},
            inputs=outcome.consumed,
        )
        return None
    if outcome.handoff is not None:
        outcome = _open_handoff(txn, step, outcome)
    times: dict[str, Any] = {"started_at": outcome.started_at, "completed_at": outcome.finished_at}
    if outcome.trace:
        times["data"] = dict(outcome.trace)
    if outcome.consumed:
        times["inputs"] = outcome.consumed
    if outcome.error and outcome.pause is None:
        txn.set_steps(
            [name], S.FAILED, finished_at=outcome.finished_at, lease_until=None, error=outcome.error
        )
        return transitions.step_failed(
            txn, name, error=outcome.error, fields=times, inline_from=spec_step
        )
    if outcome.pause is None:
        txn.set_steps(
            [name],
            S.SUCCEEDED,
            finished_at=outcome.finished_at,
            lease_until=None,
            outputs=outcome.outputs,
        )
        txn.audit(
            "step.succeeded", step_name=name, status=S.SUCCEEDED, outputs=outcome.outputs, **times
        )
        transitions.step_event(txn, "step.succeeded", name, S.SUCCEEDED, outcome.outputs)
        txn.checkpoint(
            Checkpoint.Kind.STEP, step_name=name, step_run_id=step.pk, status=S.SUCCEEDED
        )
        return transitions.progress(txn, inline_from=spec_step, after=name)
    txn.set_steps([name], S.WAITING, lease_until=None)
    reason = outcome.pause or ""
    txn.audit("step.waiting", step_name=name, status=S.WAITING, pause_reason=reason, **times)
    transitions.step_event(txn, "step.waiting", name, S.WAITING)
    txn.checkpoint(
        Checkpoint.Kind.STEP,
        step_name=name,
        step_run_id=step.pk,
        status=S.WAITING,
        paused=True,
        pause_reason=reason,
    )
    if outcome.waits_for is None:  # a Pause: people decide, in a human task
        for hook in pause_hooks:
            hook(txn=txn, step_run=StepRun.objects.get(pk=step.pk), reason=outcome.pause)
    return transitions.progress(txn, inline_from=spec_step)


def _open_handoff(txn: RunTxn, step: StepRun, outcome: Outcome) -> Outcome:
    """Turn a step's Handoff into its outcome: the child started, waited for, or refused."""
    assert outcome.handoff is not None
    opened = handoffs.open_step_handoff(txn, step, outcome.handoff)
    if isinstance(opened, str):
        return replace(outcome, handoff=None, error=opened)
    pipeline = outcome.handoff.pipeline
    if outcome.handoff.wait:
        reason = f"waiting for run {opened.child_run_id} of {pipeline}"
        return replace(outcome, handoff=None, pause=reason, waits_for=opened.child_run_id)
    outputs = {"envelope": opened.pk, "run": opened.child_run_id, "pipeline": pipeline}
    return replace(outcome, handoff=None, outputs=outputs)


def _outcome_status(outcome: Outcome) -> str:
    if outcome.pause is not None:
        return S.WAITING
    return S.FAILED if outcome.error else S.SUCCEEDED
