"""Every state change of pipelines and runs, each in one transaction with its audit entries."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import psycopg
from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from pipelines import engine, events, permissions, registry, sinks, tracing
from pipelines.audit import AuditChain
from pipelines.batch import Batch, Stale
from pipelines.context import Handoff, Pause, StepContext
from pipelines.errors import (
    Conflict,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from pipelines.leases import leases
from pipelines.limits import json_problem
from pipelines.models import Checkpoint, HandoffEnvelope, Run, StepRun
from pipelines.spec import PipelineSpec, StepSpec, validate_inputs
from pipelines.versions import (  # noqa: F401 (re-exported: callers use services.*)
    VersionInfo,
    pipeline_create,
    pipeline_version,
    version_info,
    version_spec,
)

log = logging.getLogger(__name__)

S = StepRun.Status
R = Run.Status


# Audit events that event hooks hear of too (see pipelines.events).
STEP_EVENTS = frozenset({"step.succeeded", "step.failed", "step.waiting"})


def _enqueue_advance(run_id: int) -> None:
    from pipelines.tasks import advance_run

    transaction.on_commit(lambda: advance_run.delay(run_id))


def _enqueue_finish(run_id: int) -> None:
    from pipelines.tasks import finish_run

    transaction.on_commit(lambda: finish_run.delay(run_id))


def _enqueue_steps(steps: list[tuple[int, str]], countdown: float = 0) -> None:
    """Send `execute_step` for each (step run id, queue) once this transaction commits.

    The queue is the step's `queue` field ("": Celery's default queue).
    """
    from pipelines.tasks import execute_step

    def send() -> None:
        for step_run_id, queue in steps:
            route: dict[str, Any] = {"queue": queue} if queue else {}
            execute_step.apply_async((step_run_id,), countdown=countdown, **route)

    if steps:
        transaction.on_commit(send)


def _broker_backlog(queue: str) -> int:
    """How many messages wait in a broker queue ("": the default queue); 0 if unknown."""
    from kombu import Queue

    from firefly_site.celery import app

    name = queue or app.conf.task_default_queue
    try:
        with app.connection_for_read() as broker:
            # (queue, message_count, consumer_count); kombu's type stubs say otherwise.
            declared: Any = Queue(name)(broker).queue_declare(passive=True)
            return int(declared.message_count)
    except Exception:  # an empty queue does not exist on Redis; or the broker cannot say
        return 0


# --- the transaction of one run -------------------------------------------------------


class RunTxn:
    """One transaction's writes to a locked run: steps, checkpoints, audit entries.

    Everything that changes a run happens under its row lock, so the engine's view of
    the step states cannot change underneath it and the audit chain cannot fork.
    """

    def __init__(
        self,
        run: Run,
        actor: Any = None,
        states: dict[str, engine.StepState] | None = None,
        expect_revision: int | None = None,
    ) -> None:
        self.run = run
        self.expect_revision = expect_revision
        self.version = version_info(run.pipeline_version_id)
        self.spec = self.version.spec
        self.actor = actor
        self.now = timezone.now()
        self.chain = AuditChain(run, self.version.pipeline_id)
        self.checkpoints: list[Checkpoint] = []
        self.run_fields: dict[str, Any] = {}
        # Step rows' changes, written at flush; merged so that each row is updated once.
        self.step_updates: dict[int, dict[str, Any]] = {}
        self._states = states

    @property
    def states(self) -> dict[str, engine.StepState]:
        if self._states is None:
            self._states = _read_states(self.run.pk)
        return self._states

    def set_state(
        self, name: str, step_id: int, status: str, generation: int, attempt: int
    ) -> None:
        self.states[name] = engine.StepState(step_id, status, generation, attempt)

    def audit(self, event: str, **fields: Any) -> None:
        fields.setdefault("actor", self.actor)
        self.chain.add(event, now=self.now, **fields)
        if event in STEP_EVENTS:
            # Event hooks hear of a step's outcome from its audit entry, after commit.
            self.emit(
                event,
                step=fields.get("step_name", ""),
                status=fields.get("status", ""),
                outputs=fields.get("outputs"),
                error=fields.get("error_message", ""),
            )

    def emit(self, event: str, **payload: Any) -> None:
        events.emit_after_commit(
            event, {"run": self.run.pk, "pipeline": self.version.pipeline_name, **payload}
        )

    def checkpoint(self, kind: str, **fields: Any) -> None:
        self.run.checkpoint_seq += 1
        self.checkpoints.append(
            Checkpoint(
                run_id=self.run.pk,
                seq=self.run.checkpoint_seq,
                kind=kind,
                generation=self.run.generation,
                created_at=self.now,
                **fields,
            )
        )

    def set_run(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self.run, name, value)
        self.run_fields.update(fields)

    def snapshot(self) -> Snapshot | None:
        return Snapshot(self.run, self._states) if self._states is not None else None

    def flush(self, *, commit: bool = False) -> None:
        """Write everything this transaction changed, in one round trip where possible.

        With `commit` the same round trip commits the transaction (see `locked_run`).
        """
        if not (self.chain.entries or self.checkpoints or self.step_updates or self.run_fields):
            return
        batch = Batch()
        # The run row first: in the optimistic case this write takes the run's lock,
        # so every writer locks the run before its steps.
        run_changes = {
            "revision": self.run.revision + 1,
            "audit_seq": self.run.audit_seq,
            "audit_head": self.run.audit_head,
            "checkpoint_seq": self.run.checkpoint_seq,
            **self.run_fields,
        }
        batch.update(Run, self.run.pk, run_changes, expect={"revision": self.run.revision})
        for step_id, values in self.step_updates.items():
            batch.update(StepRun, step_id, values)
        batch.insert(self.chain.entries)
        batch.insert(self.checkpoints)
        stale = f"run {self.run.pk} changed after revision {self.run.revision}"
        try:
            updated = batch.execute(commit=commit)
        except Stale as exc:
            raise StaleRun(stale) from exc
        except IntegrityError as exc:  # a concurrent writer took these sequence numbers
            if self.expect_revision is None:
                raise
            raise StaleRun(str(exc)) from exc
        if not updated:
            raise StaleRun(stale)
        sinks.publish_after_commit(self.chain.entries)
        self.run.revision += 1
        self.chain.entries, self.checkpoints, self.step_updates, self.run_fields = [], [], {}, {}

    # --- transitions --------------------------------------------------------------

    def set_steps(self, names: list[str], status: str, **fields: Any) -> None:
        for name in names:
            state = self.states[name]
            self.step_updates.setdefault(state.id, {}).update(status=status, **fields)
            self.set_state(name, state.id, status, state.generation, state.attempt)

    def add_attempts(
        self, names: list[str], *, status: str, generation: int, **fields: Any
    ) -> list[StepRun]:
        rows = []
        for name in names:
            state = self.states.get(name)
            attempt = state.attempt + 1 if state and state.generation == generation else 1
            rows.append(
                StepRun(
                    run_id=self.run.pk,
                    step_name=name,
                    generation=generation,
                    attempt=attempt,
                    status=status,
                    **fields,
                )
            )
        StepRun.objects.bulk_create(rows)
        for row in rows:
            self.set_state(row.step_name, row.pk, status, generation, row.attempt)
        return rows

    def outputs(self, names: AbstractSet[str]) -> dict[str, Any]:
        ids = [
            state.id
            for name, state in self.states.items()
            if name in names and state.status == S.SUCCEEDED
        ]
        if not ids:
            return {}
        found = dict(StepRun.objects.filter(pk__in=ids).values_list("step_name", "outputs"))
        for name, state in self.states.items():
            pending = self.step_updates.get(state.id, {})
            if name in names and "outputs" in pending:
                found[name] = pending["outputs"]  # written by this transaction, not yet flushed
        return found

    def progress(
        self, *, inline_from: StepSpec | None = None, after: str | None = None
    ) -> StepRun | None:
        """Move the run on: skip, queue or open ready steps; finish it when nothing is left.

        `after` names the step that just succeeded: only its successors can have become
        ready. `inline_from` is the step the calling worker just ran: when exactly one
        automatic step is ready, and it goes to the same queue, it is started here and
        returned for that worker to run at once (no broker round trip).
        """
        if self.run.is_finishing:
            return None  # the steps are done; on_finish ends the run
        spec, states, now = self.spec, self.states, self.now
        when_steps = spec.when_inputs
        candidates = spec.successors[after] if after else None
        plan = engine.plan(spec, states, self.outputs(when_steps) if when_steps else {}, candidates)
        skips = {**engine.blocked_by_failure(spec, states), **plan.skip}
        for name, reason in skips.items():
            self.set_steps([name], S.SKIPPED, finished_at=now, error=reason)
            self.audit("step.skipped", step_name=name, status=S.SKIPPED, data={"reason": reason})
            self.checkpoint(
                Checkpoint.Kind.STEP, step_name=name, step_run_id=states[name].id, status=S.SKIPPED
            )
        if skips:
            # A skip can make steps below it ready (or skipped) in turn.
            plan = engine.plan(spec, states, self.outputs(when_steps) if when_steps else {})

        automatic = [name for name in plan.run if not spec.by_name[name].interactive]
        for name in plan.run:
            if spec.by_name[name].interactive:
                self.wait_for_person(name)

        inline = None
        if (
            inline_from is not None
            and len(automatic) == 1
            and spec.by_name[automatic[0]].queue == inline_from.queue
        ):
            inline = self.start_step(automatic[0])
        elif automatic:
            self.set_steps(automatic, S.QUEUED, queued_at=now)
            _enqueue_steps([(states[name].id, spec.by_name[name].queue) for name in automatic])

        # With a step just queued or started, the run is neither over nor only waiting:
        # a long chain then skips the two scans of every step below.
        outcome = None if automatic else engine.outcome(spec, states)
        if outcome is not None:
            self.finish(outcome)
            return inline
        if self.run.started_at is None:
            self.set_run(started_at=now)
            self.audit("run.started", status=R.RUNNING)
        status = R.WAITING if not automatic and _only_waiting(states) else R.RUNNING
        if self.run.status != status:
            self.set_run(status=status)
        return inline

    def start_step(self, name: str) -> StepRun:
        """Move a ready step to running, for this worker to run once this commits."""
        lease_until = self.now + timedelta(seconds=settings.FIREFLY_STEP_LEASE_S)
        state = self.states[name]
        self.set_steps([name], S.RUNNING, started_at=self.now, lease_until=lease_until)
        self.emit("step.started", step=name, status=S.RUNNING, attempt=state.attempt)
        return StepRun(
            id=state.id,
            run=self.run,
            step_name=name,
            generation=state.generation,
            attempt=state.attempt,
            status=S.RUNNING,
            started_at=self.now,
            lease_until=lease_until,
        )

    def wait_for_person(self, name: str) -> None:
        step = self.spec.by_name[name]
        self.set_steps([name], S.WAITING, started_at=self.now)
        step_run = StepRun.objects.get(pk=self.states[name].id)
        step_run.status, step_run.started_at = S.WAITING, self.now  # flushed with the batch
        kind = registry.get(step.type)
        if kind.on_wait:
            kind.on_wait(txn=self, step_run=step_run, step=step)
        self.audit("step.waiting", step_name=name, status=S.WAITING, started_at=self.now)
        self.checkpoint(
            Checkpoint.Kind.STEP,
            step_name=name,
            step_run_id=step_run.pk,
            status=S.WAITING,
            paused=True,
        )

    def cancel_active(self, names: list[str]) -> list[str]:
        """Cancel those of `names` that are queued, running or waiting; returns them."""
        active = [name for name in names if self.states[name].status in engine.ACTIVE]
        waiting = [self.states[name].id for name in active if self.states[name].status == S.WAITING]
        if active:
            self.set_steps(active, S.CANCELLED, finished_at=self.now, lease_until=None)
        if waiting:
            for hook in cancel_hooks:
                hook(txn=self, step_run_ids=waiting)
        return active

    def resolve_waiting(
        self, name: str, *, status: str, outputs: Any = None, error: str = ""
    ) -> None:
        """A person decided a waiting step: it succeeds (and the run moves on) or is rejected."""
        state = self.states[name]
        if state.status != S.WAITING:
            raise Conflict(f"Step {name!r} is {state.status}, not waiting.")
        self.set_steps([name], status, outputs=outputs, error=error, finished_at=self.now)
        self.audit(
            f"step.{status}",
            step_name=name,
            status=status,
            outputs=outputs,
            error_message=error,
            completed_at=self.now,
        )
        self.checkpoint(Checkpoint.Kind.STEP, step_name=name, step_run_id=state.id, status=status)
        if status == S.REJECTED:
            self.finish(
                R.REJECTED, error=f"step {name!r} was rejected" + (f": {error}" if error else "")
            )
        else:
            self.progress(after=name)

    def rollback(self, to_step: str, *, comment: str = "", origin: str = "") -> list[str]:
        """Reset `to_step` and everything below it in a new generation; returns the reset steps."""
        run, spec = self.run, self.spec
        if run.status not in (R.RUNNING, R.WAITING, R.FAILED):
            raise Conflict(f"Run {run.pk} is {run.status}; it cannot be rolled back.")
        if run.is_finishing:
            raise Conflict(f"Run {run.pk} is finishing (on_finish is running); no roll back now.")
        if to_step not in spec.by_name:
            raise InvalidInput(
                f"Unknown step {to_step!r}.",
                details=[{"field": "to_step", "message": f"unknown step {to_step!r}"}],
            )
        if self.states[to_step].status != S.SUCCEEDED:
            raise InvalidInput(
                f"Step {to_step!r} has not completed; a run rolls back only to a completed step.",
                details=[{"field": "to_step", "message": "not a completed step"}],
            )
        reset = sorted(engine.rollback_set(spec, to_step), key=spec.order.index)
        cancelled = self.cancel_active(reset)
        # Rows that never ran are superseded by the new generation's: close them too.
        superseded = [name for name in reset if self.states[name].status == S.PENDING]
        if superseded:
            self.set_steps(superseded, S.CANCELLED, finished_at=self.now)
        generation = run.generation + 1
        self.set_run(generation=generation, status=R.RUNNING, error="", finished_at=None)
        rollback = {
            "to_step": to_step,
            "comment": comment,
            "by": self.actor.get_username() if self.actor else "system",
            "from_step": origin,
        }
        self.add_attempts(
            reset, status=S.PENDING, generation=generation, inputs={"rollback": rollback}
        )
        self.checkpoint(
            Checkpoint.Kind.ROLLBACK, step_name=to_step, data={"reset": reset, "comment": comment}
        )
        self.audit(
            "run.rolled_back",
            step_name=to_step,
            status=R.RUNNING,
            data={
                "reset": reset,
                "cancelled": cancelled,
                "generation": generation,
                "comment": comment,
                "from_step": origin,
            },
        )
        self.progress()
        return reset

    def fail_waiting(self, name: str, error: str) -> None:
        """A waiting step failed (its child run did): retries and on_failure apply."""
        state = self.states[name]
        if state.status != S.WAITING:
            raise Conflict(f"Step {name!r} is {state.status}, not waiting.")
        self.set_steps([name], S.FAILED, error=error, finished_at=self.now)
        step = StepRun(
            id=state.id,
            run=self.run,
            step_name=name,
            generation=state.generation,
            attempt=state.attempt,
        )
        common = {"step_name": name, "status": S.FAILED, "completed_at": self.now}
        outcome = Outcome(error=error, finished_at=self.now)
        _step_failed(self, step, self.spec.by_name[name], outcome, common, inline=False)

    def finish(self, status: str, error: str = "") -> None:
        """The steps are done: run the spec's on_finish first (unless cancelled), then close."""
        output = None
        if status == R.SUCCEEDED:
            names = set(self.spec.output or self.spec.terminal)
            output = self.outputs(names)
        if status in (R.CANCELLED, R.FAILED, R.REJECTED):
            self.cancel_active(list(self.states))
        if status == R.CANCELLED:
            pending = [name for name, st in self.states.items() if st.status == S.PENDING]
            if pending:
                self.set_steps(pending, S.CANCELLED, finished_at=self.now)
        if self.spec.on_finish and status != R.CANCELLED and not self.run.is_finishing:
            # The run stays running until on_finish (pipelines/lifecycle.py) has run.
            self.set_run(
                status=R.RUNNING,
                finishing=status,
                output=output,
                error=error,
                finish_lease_until=None,
                finish_attempts=0,
                disposition=None,
            )
            self.audit(
                "run.finishing",
                status=R.RUNNING,
                outputs=output,
                error_message=error,
                data={"outcome": status, "on_finish": self.spec.on_finish},
            )
            _enqueue_finish(self.run.pk)
            return
        self.close(status, output=output, error=error)

    def close(self, status: str, *, output: Any, error: str = "") -> None:
        """End the run for good: its final status, output and audit entry."""
        self.set_run(
            status=status,
            finished_at=self.now,
            output=output,
            error=error,
            finishing="",
            finish_lease_until=None,
        )
        if self.run.parent_id:
            # A parent step may be waiting for this run; it is told once this commits.
            child_id = self.run.pk
            from pipelines.tasks import settle_handoff

            transaction.on_commit(lambda: settle_handoff.delay(child_id))
        if tracing.enabled():
            run, pipeline = self.run, self.version.pipeline_name
            transaction.on_commit(lambda: tracing.record_run(run, pipeline))
        payload = {
            "run": self.run.pk,
            "pipeline": self.version.pipeline_name,
            "version": self.version.number,
            "status": status,
            "error": error,
            "output": output,
        }
        events.emit_after_commit("run.finished", payload)
        if status == R.FAILED:
            events.emit_after_commit("run.failed", payload)
        self.audit(
            "run.finished",
            status=status,
            outputs=output,
            error_message=error,
            started_at=self.run.started_at,
            completed_at=self.now,
        )


@dataclass
class Snapshot:
    """The run row and its step states as this worker committed them (one revision)."""

    run: Run
    states: dict[str, engine.StepState]

    @property
    def revision(self) -> int:
        return self.run.revision


class StaleRun(Exception):
    """Someone changed the run since the snapshot a transaction was built on."""


@contextmanager
def locked_run(run_id: int, actor: Any = None, known: Snapshot | None = None) -> Iterator[RunTxn]:
    """Lock a run for one transaction; its writes are flushed when the block ends.

    With a snapshot (`known`) the run row is not read first: the transaction is built
    on what this worker committed last, and its first write (the run row's, guarded by
    `revision`) takes the lock. That spares a long chain a read per step, and keeps it
    linear rather than quadratic in the number of steps. If the run changed
    meanwhile, StaleRun is raised and everything is rolled back; the caller retries
    without the snapshot.
    """
    with transaction.atomic():
        if known is not None:
            txn = RunTxn(known.run, actor, known.states, expect_revision=known.revision)
        else:
            run, states = _lock_run(run_id)
            if run is None:
                raise NotFound(f"No run {run_id}.")
            txn = RunTxn(run, actor, states)
        yield txn
        # When this block is the whole transaction, its last round trip commits it too:
        # the commit as this block ends then has nothing left to send.
        txn.flush(
            commit=connection.vendor == "postgresql"
            and len(connection.atomic_blocks) == 1
            and not connection.needs_rollback
        )


# Lean reads for the paths every step takes: plain SQL skips the ORM's query building,
# which costs more than the round trip itself at a few milliseconds per step.


def _lock_run(run_id: int) -> tuple[Run | None, dict[str, engine.StepState] | None]:
    """Lock the run row and read its steps' states, in one round trip where possible.

    On PostgreSQL both statements go out in one pipeline: the second runs once the
    first holds the lock, so it reads the steps as the lock holder sees them.
    """
    meta = Run._meta
    quote = connection.ops.quote_name
    if connection.vendor != "postgresql":
        # SQLite locks the whole database for the write transaction instead.
        run = next(
            iter(Run.objects.raw(f"SELECT * FROM {meta.db_table} WHERE id = %s", [run_id])), None
        )
        return (run, _read_states(run_id)) if run else (None, None)
    columns = list(meta.concrete_fields)
    run_sql = (
        f"SELECT {', '.join(quote(f.column or f.name) for f in columns)} "
        f"FROM {quote(meta.db_table)} WHERE id = %s FOR UPDATE"
    )
    connection.ensure_connection()
    raw = connection.connection
    with (
        connection.wrap_database_errors,
        psycopg.Cursor(raw) as first,
        psycopg.Cursor(raw) as second,
    ):
        with raw.pipeline():
            first.execute(run_sql, [run_id])
            second.execute(_STATES_SQL, [run_id])
        row, rows = first.fetchone(), second.fetchall()
    if row is None:
        return None, None
    # psycopg returns timestamps aware; Django reads jsonb as text for JSONField to parse.
    values = [
        f.from_db_value(v, None, connection) if hasattr(f, "from_db_value") and v is not None else v
        for f, v in zip(columns, row, strict=True)
    ]
    run = Run.from_db(connection.alias, [f.attname for f in columns], values)
    return run, _states_from_rows(rows)


_STATES_SQL = (
    "SELECT step_name, id, status, generation, attempt "
    f"FROM {StepRun._meta.db_table} WHERE run_id = %s"
)


def step_states(run_id: int) -> dict[str, engine.StepState]:
    """Each step's current attempt, as the engine sees it (a plain read, no lock)."""
    return _read_states(run_id)


def _read_states(run_id: int) -> dict[str, engine.StepState]:
    with connection.cursor() as cursor:
        cursor.execute(_STATES_SQL, [run_id])
        return _states_from_rows(cursor.fetchall())


def _states_from_rows(rows: list[Any]) -> dict[str, engine.StepState]:
    return engine.latest(
        (name, engine.StepState(pk, status, generation, attempt))
        for name, pk, status, generation, attempt in rows
    )


def _claim(step_run_id: int, now: datetime, lease_until: datetime) -> StepRun | None:
    """queued -> running in one statement; returns the step with its run, or None."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {StepRun._meta.db_table} SET status = %s, started_at = %s, lease_until = %s "
            "WHERE id = %s AND status = %s RETURNING run_id, step_name, generation, attempt",
            [S.RUNNING, now, lease_until, step_run_id, S.QUEUED],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    run_id, step_name, generation, attempt = row
    return StepRun(
        id=step_run_id,
        run=_run_for_steps(run_id),
        step_name=step_name,
        generation=generation,
        attempt=attempt,
        status=S.RUNNING,
        started_at=now,
        lease_until=lease_until,
    )


@lru_cache(maxsize=1024)
def _run_for_steps(run_id: int) -> Run:
    """What a step handler needs of its run (inputs and version never change)."""
    return Run.objects.only("pipeline_version_id", "inputs", "trace_id").get(pk=run_id)


def _only_waiting(states: Mapping[str, engine.StepState]) -> bool:
    statuses = {state.status for state in states.values()}
    return S.WAITING in statuses and not statuses & {S.QUEUED, S.RUNNING}


# --- runs -----------------------------------------------------------------------------


@transaction.atomic
def run_start(
    *,
    pipeline: str,
    inputs: Any,
    actor: Any = None,
    version: int | None = None,
    idempotency_key: str = "",
    parent: Run | None = None,
) -> Run:
    """Validate the inputs, create the run with a pending row per step, and queue it.

    An `idempotency_key` is scoped to the actor and the pipeline: the same key with the
    same request returns the run it started; with another request it is refused
    (`IdempotencyKeyReused`), never answered with a run the request did not ask for.
    A `parent` run (a handoff) shares its trace.
    """
    request_hash = _request_hash(pipeline, version, inputs) if idempotency_key else ""
    scope = {"created_by": actor, "idempotency_scope": pipeline, "idempotency_key": idempotency_key}
    if idempotency_key:
        first = Run.objects.filter(**scope).first()
        if first is not None:
            return _replay(first, request_hash, idempotency_key)
    pipeline_version_ = pipeline_version(pipeline, version)
    spec = version_spec(pipeline_version_.pk)
    validate_inputs(spec, inputs)
    try:
        # A savepoint: a concurrent start with the same key waits on the unique index
        # until the other commits, then fails here and returns the other's run.
        with transaction.atomic():
            run = Run.objects.create(
                pipeline_version=pipeline_version_,
                inputs=inputs,
                created_by=actor,
                idempotency_key=idempotency_key,
                idempotency_scope=pipeline if idempotency_key else "",
                request_hash=request_hash,
                parent=parent,
                trace_id=parent.trace_id if parent and parent.trace_id else tracing.new_trace_id(),
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        return _replay(Run.objects.get(**scope), request_hash, idempotency_key)
    _create_steps(run, dict.fromkeys(spec.order))
    txn = RunTxn(run, actor)
    txn.audit(
        "run.created",
        status=R.PENDING,
        inputs=inputs,
        data={
            "pipeline": pipeline_version_.pipeline.name,
            "version": pipeline_version_.number,
            **({"parent_run": parent.pk} if parent else {}),
        },
    )
    txn.flush()
    _enqueue_advance(run.pk)
    return run


def _request_hash(pipeline: str, version: int | None, inputs: Any) -> str:
    request = {"pipeline": pipeline, "version": version, "inputs": inputs}
    encoded = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _replay(first: Run, request_hash: str, key: str) -> Run:
    if first.request_hash != request_hash:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was used for run {first.pk} with a different request; "
            "use a new key for a new request.",
            details=[{"field": "Idempotency-Key", "message": f"already used for run {first.pk}"}],
        )
    return first


def _create_steps(run: Run, rows: Mapping[str, StepRun | None]) -> None:
    """Create the first row of each step: pending, or a copy of a finished attempt (fork)."""
    StepRun.objects.bulk_create(
        StepRun(run=run, step_name=name, generation=1, attempt=1, status=S.PENDING)
        if source is None
        else StepRun(
            run=run,
            step_name=name,
            generation=1,
            attempt=1,
            status=source.status,
            outputs=source.outputs,
            error=source.error,
            started_at=source.started_at,
            finished_at=source.finished_at,
            inputs={"forked_from_step_run": source.pk},
        )
        for name, source in rows.items()
    )


def run_advance(*, run_id: int) -> None:
    """Queue whatever is ready; a no-op for a finished run (safe to call any time)."""
    with locked_run(run_id) as txn:
        if not txn.run.is_finished:
            txn.progress()


def run_cancel(*, run_id: int, actor: Any = None) -> Run:
    """Cancel a run; outcomes of its steps still running are dropped when they arrive."""
    with locked_run(run_id, actor) as txn:
        refusal = refuse_operation(txn, "cancel")
        if refusal is None:
            if txn.run.is_finished:
                raise Conflict(f"Run {run_id} is already {txn.run.status}; it cannot be cancelled.")
            txn.audit("run.cancelled", status=R.CANCELLED)
            txn.finish(R.CANCELLED)
    if refusal is not None:
        raise refusal
    return txn.run


def run_resume(*, run_id: int, actor: Any = None) -> Run:
    """Run a failed run again from its last checkpoint: completed steps are kept."""
    with locked_run(run_id, actor) as txn:
        run = txn.run
        refusal = refuse_operation(txn, "resume")
        if refusal is not None:
            pass
        elif run.status != R.FAILED:
            raise Conflict(f"Run {run_id} is {run.status}; only a failed run can be resumed.")
        elif run.checkpoint_seq == 0:
            raise Conflict(f"Run {run_id} has no checkpoint to resume from.")
        else:
            reset = sorted(engine.resume_set(txn.spec, txn.states), key=txn.spec.order.index)
            txn.add_attempts(reset, status=S.PENDING, generation=run.generation)
            txn.set_run(status=R.RUNNING, error="", finished_at=None, output=None)
            txn.checkpoint(Checkpoint.Kind.RESUME, data={"steps": reset})
            txn.audit("run.resumed", status=R.RUNNING, data={"steps": reset})
            txn.progress()
    if refusal is not None:
        raise refusal
    return txn.run


def refuse_operation(txn: RunTxn, verb: str) -> PermissionDenied | None:
    """The refusal, audited in the run's chain, when `txn.actor` may not `verb` the run.

    The caller lets the transaction commit (the audit entry is the evidence) and raises
    the refusal after it.
    """
    if permissions.may_operate(txn.actor, txn.run):
        return None
    what = "acknowledge its handoffs" if verb == "acknowledge" else f"{verb} it"
    refusal = PermissionDenied(f"Only staff or the person who started a run may {what}.")
    person = permissions.is_person(txn.actor)
    txn.audit(
        "run.refused",
        actor=txn.actor if person else None,
        status=txn.run.status,
        error_message=str(refusal),
        data={"action": verb, **({} if person else {"actor": "anonymous"})},
    )
    return refusal


def run_rollback(
    *, run_id: int, to_step: str, actor: Any = None, comment: str = "", origin: str = ""
) -> Run:
    """Reset `to_step` and everything downstream in a new generation and run from there."""
    with locked_run(run_id, actor) as txn:
        txn.rollback(to_step, comment=comment, origin=origin)
    return txn.run


def run_fork(*, run_id: int, checkpoint_seq: int, actor: Any = None) -> Run:
    """Start a new run from the state of `run_id` at one of its checkpoints.

    Only staff and the run's starter may fork it (refusals are audited on the source
    run). A fork never carries a human decision over: a step that waited for a person
    (or for another run) starts fresh, and so does everything below it, so a fork from
    after an approval asks for the approval again.
    """
    source = Run.objects.select_related("pipeline_version__pipeline").filter(pk=run_id).first()
    if source is None:
        raise NotFound(f"No run {run_id}.")
    if not permissions.may_operate(actor, source):
        with locked_run(run_id, actor) as txn:
            refusal = refuse_operation(txn, "fork")
        raise refusal  # type: ignore[misc]
    return _fork(source, checkpoint_seq, actor)


@transaction.atomic
def _fork(source: Run, checkpoint_seq: int, actor: Any) -> Run:
    checkpoints = list(source.checkpoints.filter(seq__lte=checkpoint_seq).order_by("seq"))
    if not checkpoints or checkpoints[-1].seq != checkpoint_seq:
        raise NotFound(f"Run {source.pk} has no checkpoint {checkpoint_seq}.")
    spec = version_spec(source.pipeline_version_id)
    done = checkpoint_state(checkpoints)
    redo = decided_elsewhere(spec, done, checkpoints)
    done = {name: step_run_id for name, step_run_id in done.items() if name not in redo}
    sources = StepRun.objects.in_bulk(done.values())
    run = Run.objects.create(
        pipeline_version=source.pipeline_version,
        inputs=source.inputs,
        created_by=actor,
        forked_from=source,
        forked_from_seq=checkpoint_seq,
        trace_id=tracing.new_trace_id(),
    )
    _create_steps(
        run, {name: sources.get(done[name]) if name in done else None for name in spec.order}
    )
    txn = RunTxn(run, actor)
    kept, redone = sorted(done), sorted(redo, key=spec.order.index)
    txn.checkpoint(
        Checkpoint.Kind.FORK,
        data={"run": source.pk, "seq": checkpoint_seq, "steps": kept, "redo": redone},
    )
    txn.audit(
        "run.created",
        status=R.PENDING,
        inputs=source.inputs,
        data={
            "forked_from": source.pk,
            "checkpoint": checkpoint_seq,
            "kept": kept,
            "redo": redone,
        },
    )
    txn.flush()
    _enqueue_advance(run.pk)
    return run


def decided_elsewhere(
    spec: PipelineSpec, done: Mapping[str, int], checkpoints: list[Checkpoint]
) -> set[str]:
    """Completed steps a fork must not keep: those a decision outside the run completed
    (an interactive step, a Pause, a handoff that waited), and every step below them."""
    waited = {c.step_run_id for c in checkpoints if c.kind == Checkpoint.Kind.STEP and c.paused}
    decided = [
        name
        for name, step_run_id in done.items()
        if spec.by_name[name].interactive or step_run_id in waited
    ]
    return set().union(*(engine.rollback_set(spec, name) for name in decided))


def checkpoint_state(checkpoints: list[Checkpoint]) -> dict[str, int]:
    """Fold checkpoints (in order) into {step: step_run_id} of the steps completed by then."""
    done: dict[str, int] = {}
    for checkpoint in checkpoints:
        if checkpoint.kind == Checkpoint.Kind.STEP and checkpoint.status in (
            S.SUCCEEDED,
            S.SKIPPED,
        ):
            done[checkpoint.step_name] = checkpoint.step_run_id  # type: ignore[assignment]
        elif checkpoint.kind == Checkpoint.Kind.STEP:
            done.pop(checkpoint.step_name, None)
        elif checkpoint.kind in (Checkpoint.Kind.ROLLBACK, Checkpoint.Kind.RESUME):
            for name in (checkpoint.data or {}).get(
                "reset", (checkpoint.data or {}).get("steps", [])
            ):
                done.pop(name, None)
        elif checkpoint.kind == Checkpoint.Kind.FORK:
            done.clear()
    return done


# --- executing steps ------------------------------------------------------------------


@dataclass
class Outcome:
    outputs: dict[str, Any] | None = None
    error: str = ""
    pause: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # A step that hands work to another pipeline (opened when this outcome commits).
    handoff: Handoff | None = None
    # The child run a waiting step waits for (no human task is opened for it).
    waits_for: int | None = None
    # The attempt's span ids, when tracing is on (kept on its audit entry).
    trace: dict[str, str] | None = None


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
    step = _claim(step_run_id, now, lease_until)
    if step is None:
        return None
    pipeline = version_info(step.run.pipeline_version_id).pipeline_name
    payload = {"run": step.run.pk, "pipeline": pipeline, "step": step.step_name}
    events.emit_after_commit(
        "step.started", {**payload, "status": S.RUNNING, "attempt": step.attempt}
    )
    return Started(step, None)


def step_execute(*, step_run_id: int) -> None:
    """Run a queued step, commit its outcome, and go on with a lone ready successor."""
    started = step_begin(step_run_id=step_run_id)
    while started is not None:
        outcome = _call_handler(started.step)
        started = step_finish(started=started, outcome=outcome)


def step_finish(*, started: Started, outcome: Outcome) -> Started | None:
    """Commit a step's outcome with its checkpoint and audit entry.

    Returns the next step to run in this worker when exactly one automatic step became
    ready. An outcome that arrives after the step was cancelled, rolled back or given to
    another worker (lease expired) is audited and dropped.
    """
    if started.snapshot is not None:
        try:
            with locked_run(started.step.run.pk, known=started.snapshot) as txn:
                step = _commit_outcome(txn, started.step, outcome)
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
                steps = [_commit_outcome(txn, p.started.step, p.outcome) for p in batch]
        except BaseException as exc:
            for pending in batch:
                pending.error, pending.done = exc, True
            return
        snapshot = txn.snapshot()
        for pending, step in zip(batch, steps, strict=True):
            pending.next, pending.done = Started(step, snapshot) if step else None, True


_outcomes = OutcomeQueue()


def _commit_outcome(txn: RunTxn, step: StepRun, outcome: Outcome) -> StepRun | None:
    spec_step = txn.spec.by_name[step.step_name]
    # Under the run lock the states are authoritative: a step cancelled, rolled back or
    # handed to another worker (lease expired) is no longer this running attempt.
    current = txn.states.get(step.step_name)
    if current != (step.pk, S.RUNNING, step.generation, step.attempt) or txn.run.is_finished:
        txn.audit(
            "step.outcome_dropped",
            step_name=step.step_name,
            status=_outcome_status(outcome),
            outputs=outcome.outputs,
            error_message=outcome.error,
            started_at=outcome.started_at,
            completed_at=outcome.finished_at,
            data={"reason": "the step was no longer running", "attempt": step.attempt},
        )
        return None
    if outcome.handoff is not None:
        from pipelines import lifecycle

        outcome = lifecycle.open_step_handoff(txn, step, outcome)
    fields: dict[str, Any] = {"finished_at": outcome.finished_at, "lease_until": None}
    if outcome.pause is not None:
        fields = {"lease_until": None}
        status = S.WAITING
    elif outcome.error:
        status = S.FAILED
        fields["error"] = outcome.error
    else:
        status = S.SUCCEEDED
        fields["outputs"] = outcome.outputs
    txn.set_steps([step.step_name], status, **fields)
    common: dict[str, Any] = {
        "step_name": step.step_name,
        "status": status,
        "started_at": outcome.started_at,
        "completed_at": outcome.finished_at,
    }
    if outcome.trace:
        common["data"] = dict(outcome.trace)
    if status == S.SUCCEEDED:
        txn.audit("step.succeeded", outputs=outcome.outputs, **common)
        txn.checkpoint(
            Checkpoint.Kind.STEP, step_name=step.step_name, step_run_id=step.pk, status=status
        )
        return txn.progress(inline_from=spec_step, after=step.step_name)
    if status == S.WAITING:
        txn.audit("step.waiting", pause_reason=outcome.pause or "", **common)
        txn.checkpoint(
            Checkpoint.Kind.STEP,
            step_name=step.step_name,
            step_run_id=step.pk,
            status=status,
            paused=True,
            pause_reason=outcome.pause or "",
        )
        if outcome.waits_for is None:  # a Pause: people decide, in a human task
            for hook in pause_hooks:
                hook(txn=txn, step_run=StepRun.objects.get(pk=step.pk), reason=outcome.pause)
        return txn.progress(inline_from=spec_step)
    return _step_failed(txn, step, spec_step, outcome, common)


def _outcome_status(outcome: Outcome) -> str:
    if outcome.pause is not None:
        return S.WAITING
    return S.FAILED if outcome.error else S.SUCCEEDED


def _step_failed(
    txn: RunTxn,
    step: StepRun,
    spec_step: StepSpec,
    outcome: Outcome,
    common: dict[str, Any],
    inline: bool = True,
) -> StepRun | None:
    common = {**common}
    data = {**(common.pop("data", None) or {}), "attempt": step.attempt}
    if step.attempt <= spec_step.retries and step.generation == txn.run.generation:
        delay = spec_step.backoff_s(step.attempt)
        txn.audit(
            "step.failed",
            error_message=outcome.error,
            data={**data, "retry_in_s": delay},
            **common,
        )
        (retry,) = txn.add_attempts(
            [step.step_name],
            status=S.QUEUED,
            generation=step.generation,
            queued_at=txn.now + timedelta(seconds=delay),
        )
        _enqueue_steps([(retry.pk, spec_step.queue)], countdown=delay)
        return None
    txn.audit("step.failed", error_message=outcome.error, data=data, **common)
    txn.checkpoint(
        Checkpoint.Kind.STEP, step_name=step.step_name, step_run_id=step.pk, status=S.FAILED
    )
    if spec_step.on_failure == "fail_run":
        reason = outcome.error.splitlines()[-1] if outcome.error else "no error message"
        txn.finish(R.FAILED, error=f"step {step.step_name!r} failed: {reason}")
        return None
    return txn.progress(inline_from=spec_step if inline else None)


# Called in the transaction that pauses a step (the approvals app opens a task there),
# and in the one that cancels waiting steps (the approvals app cancels their tasks).
pause_hooks: list[Callable[..., None]] = []
cancel_hooks: list[Callable[..., None]] = []


def _call_handler(step: StepRun) -> Outcome:
    """Run the step's handler outside any transaction and capture what happened."""
    run = step.run
    spec = version_spec(run.pipeline_version_id)
    spec_step = spec.by_name[step.step_name]
    extra = _step_extra(step)
    ctx = StepContext(
        run_id=run.pk,
        step_name=step.step_name,
        generation=step.generation,
        attempt=step.attempt,
        inputs=run.inputs,
        upstream=LazyUpstream(run.pk, spec_step.after),
        config=spec_step.config,
        idempotency_key=f"run-{run.pk}-{step.step_name}-gen-{step.generation}",
        logger=logging.getLogger(f"firefly.step.{spec.name}.{step.step_name}"),
        extra=extra,
        step_run_id=step.pk,
    )
    handler = registry.get(spec_step.type).handler
    assert handler is not None
    started = step.started_at or timezone.now()
    if tracing.enabled():
        with tracing.step_span(step, spec.name, run.trace_id) as span:
            outcome = _run_handler(handler, ctx, spec_step.timeout_s, started)
            span.finish(outcome.error)
            outcome.trace = span.ids
        return outcome
    return _run_handler(handler, ctx, spec_step.timeout_s, started)


def _run_handler(
    handler: registry.Handler, ctx: StepContext, timeout_s: float | None, started: datetime
) -> Outcome:
    leases.hold(ctx.step_run_id, ctx.cancelled)
    try:
        result = _call_with_timeout(handler, ctx, timeout_s) if timeout_s else handler(ctx)
    except Exception as exc:
        log.info("step %s of run %s failed: %s", ctx.step_name, ctx.run_id, exc)
        error = "".join(traceback.format_exception_only(exc)).strip()
        return Outcome(error=error, started_at=started, finished_at=timezone.now())
    finally:
        leases.release(ctx.step_run_id)
    if isinstance(result, Pause):
        return Outcome(pause=result.reason, started_at=started, finished_at=timezone.now())
    problem = _result_problem(result)
    if problem:
        # Refused here, as the attempt's own failure: stored as it is, the value would
        # fail the outcome's commit, and the step would sit running until its lease ran
        # out and be retried as if its worker were lost.
        log.info("step %s of run %s returned no JSON: %s", ctx.step_name, ctx.run_id, problem)
        return Outcome(error=problem, started_at=started, finished_at=timezone.now())
    if isinstance(result, Handoff):
        return Outcome(handoff=result, started_at=started, finished_at=timezone.now())
    return Outcome(outputs=result, started_at=started, finished_at=timezone.now())


def _result_problem(result: Any) -> str | None:
    """Why a handler's result cannot be stored as the step's outputs, or None."""
    if isinstance(result, Handoff):
        return json_problem(result.payload, "handoff payload")
    if not isinstance(result, dict):
        return f"the step returned a {type(result).__name__}; a step returns a JSON object."
    return json_problem(result, "output")


class StepTimeout(Exception):
    pass


def _call_with_timeout(handler: Callable[[Any], Any], ctx: Any, timeout_s: float) -> Any:
    # Python cannot kill a thread: on timeout the step fails and the handler is told
    # through ctx.cancelled; whatever it returns later is ignored.
    def call() -> Any:
        try:
            return handler(ctx)
        finally:
            close_old_connections()

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="firefly-step")
    try:
        return pool.submit(call).result(timeout=timeout_s)
    except FutureTimeout:
        ctx.cancelled.set()
        raise StepTimeout(f"step timed out after {timeout_s:g}s") from None
    finally:
        pool.shutdown(wait=False)


def _step_extra(step: StepRun) -> dict[str, Any]:
    inputs = step.inputs
    if inputs is None and step.generation > 1:
        inputs = StepRun.objects.filter(pk=step.pk).values_list("inputs", flat=True).first()
    return dict(inputs or {})


class LazyUpstream(Mapping[str, Any]):
    """Outputs of a step's direct upstream steps, read from the database on first use."""

    def __init__(self, run_id: int, names: tuple[str, ...]) -> None:
        self.run_id = run_id
        self.names = names
        self._data: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            rows = (
                StepRun.objects.filter(
                    run_id=self.run_id, step_name__in=self.names, status=S.SUCCEEDED
                )
                .order_by("generation", "attempt")
                .values_list("step_name", "outputs")
            )
            self._data = dict(rows)
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


# --- recovery -------------------------------------------------------------------------


@dataclass
class ReapReport:
    lost: int = 0
    resent: int = 0
    waiting: int = 0  # queued steps left alone: their queue still holds as many messages
    advanced: int = 0
    finishing: int = 0
    settled: int = 0


def reap() -> ReapReport:
    """Recover from dead workers, lost messages and stalled runs (run by Celery beat)."""
    report = ReapReport()
    now = timezone.now()
    expired = StepRun.objects.filter(status=S.RUNNING, lease_until__lt=now).values_list(
        "pk", "run_id"
    )
    for step_run_id, run_id in expired:
        report.lost += _recover_lost_step(run_id, step_run_id)

    stale_queue = now - timedelta(seconds=settings.FIREFLY_REQUEUE_AFTER_S)
    stale_steps: dict[str, list[int]] = defaultdict(list)
    for step_run_id, version_id, name in StepRun.objects.filter(
        status=S.QUEUED, queued_at__lt=stale_queue
    ).values_list("pk", "run__pipeline_version_id", "step_name"):
        stale_steps[version_spec(version_id).by_name[name].queue].append(step_run_id)
    for queue, ids in stale_steps.items():
        if _broker_backlog(queue) >= len(ids):
            # Their messages are likely still there, behind busy workers or waiting for
            # a worker of that queue: sending more would only pile up duplicates.
            report.waiting += len(ids)
            continue
        for step_run_id in ids:
            # Re-sending is safe: a duplicate finds the step no longer queued.
            if StepRun.objects.filter(pk=step_run_id, status=S.QUEUED).update(queued_at=now):
                with transaction.atomic():
                    _enqueue_steps([(step_run_id, queue)])
                report.resent += 1

    busy = StepRun.objects.filter(run=OuterRef("pk"), status__in=[S.QUEUED, S.RUNNING])
    stalled = (
        Run.objects.filter(Q(status=R.RUNNING) | Q(status=R.PENDING, created_at__lt=stale_queue))
        .filter(~Exists(busy), finishing="")
        .values_list("pk", flat=True)
    )
    for run_id in stalled:
        run_advance(run_id=run_id)
        report.advanced += 1

    # on_finish whose message was lost or whose worker died (its lease expired). A
    # duplicate message is harmless: only one worker can hold the finish lease.
    finishing = (
        Run.objects.filter(status=R.RUNNING)
        .exclude(finishing="")
        .filter(Q(finish_lease_until__isnull=True) | Q(finish_lease_until__lt=now))
        .values_list("pk", flat=True)
    )
    for run_id in finishing:
        with transaction.atomic():
            _enqueue_finish(run_id)
        report.finishing += 1

    # Waiting handoff steps whose child run finished but were not told (message lost).
    from pipelines import lifecycle

    done_children = HandoffEnvelope.objects.filter(
        wait=True, acknowledged_at__isnull=True, child_run__status__in=Run.FINISHED
    ).values_list("child_run_id", flat=True)
    for child_run_id in done_children:
        report.settled += lifecycle.handoff_settle(child_run_id=child_run_id)
    if report.lost or report.resent or report.settled:
        log.warning("reaper: %s", report)
    return report


def _recover_lost_step(run_id: int, step_run_id: int) -> int:
    with locked_run(run_id) as txn:
        name = next((n for n, st in txn.states.items() if st.id == step_run_id), None)
        if name is None or txn.states[name].status != S.RUNNING:
            return 0
        state = txn.states[name]
        spec_step = txn.spec.by_name[name]
        now = txn.now
        if not StepRun.objects.filter(pk=step_run_id, status=S.RUNNING, lease_until__lt=now).update(
            status=S.FAILED,
            finished_at=now,
            lease_until=None,
            error="worker lost: the step's lease expired",
        ):
            return 0
        txn.set_state(name, state.id, S.FAILED, state.generation, state.attempt)
        attempts = StepRun.objects.filter(
            run_id=run_id, step_name=name, generation=state.generation
        ).count()
        allowed = spec_step.retries + 1 + settings.FIREFLY_LOST_WORKER_RETRIES
        txn.audit(
            "step.lost",
            step_name=name,
            status=S.FAILED,
            error_message="worker lost: the step's lease expired",
            data={"attempt": state.attempt, "retrying": attempts < allowed},
        )
        if attempts < allowed:
            (retry,) = txn.add_attempts(
                [name], status=S.QUEUED, generation=state.generation, queued_at=now
            )
            _enqueue_steps([(retry.pk, spec_step.queue)])
        else:
            txn.checkpoint(
                Checkpoint.Kind.STEP, step_name=name, step_run_id=step_run_id, status=S.FAILED
            )
            if spec_step.on_failure == "fail_run":
                txn.finish(R.FAILED, error=f"step {name!r} lost its worker {attempts} times")
            else:
                txn.progress()
        return 1
