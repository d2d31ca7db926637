"""The unit of work on one locked run: buffered writes, flushed in one round trip."""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from firefly_site import metrics
from orgs import selectors as orgs
from pipelines import engine, events, fastpath, permissions, sinks
from pipelines.audit import AuditChain
from pipelines.errors import NotFound
from pipelines.models import Checkpoint, OutboxEvent, Pipeline, Run, StepRun
from pipelines.services import outbox
from pipelines.versions import version_info

S = StepRun.Status


def event_payload(
    event: str, *, run_id: int, pipeline: str, organization_id: int, **payload: Any
) -> dict[str, Any]:
    """A run's event as hooks get it: `organization` (its slug), `run` and `pipeline` first.

    A webhook hears only of its own organization's events.
    """
    return {
        "organization": orgs.slug_of(organization_id),
        "run": run_id,
        "pipeline": pipeline,
        **payload,
    }


def emit_event(
    event: str, *, run_id: int, pipeline: str, organization_id: int, **payload: Any
) -> None:
    """Tell event hooks of a run's event outside a RunTxn (the outbox row is its own)."""
    data = event_payload(
        event, run_id=run_id, pipeline=pipeline, organization_id=organization_id, **payload
    )
    events.emit_after_commit(event, data)
    if events.durable_wanted(event, data):
        with transaction.atomic():
            outbox.outbox_write(event, data, organization_id=organization_id)


class RunTxn:
    """One transaction's writes to a locked run: steps, checkpoints, audit entries.

    Everything that changes a run happens under its row lock, so the engine's view of
    the step states cannot change underneath it and the audit chain cannot fork. The
    run's transitions (pipelines.services.transitions) describe their changes here.
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
        self.outbox: list[OutboxEvent] = []
        # Rows written only where a durable hook's condition holds (outbox.gated_row).
        self.gated: list[outbox.GatedRow] = []
        self.run_fields: dict[str, Any] = {}
        # Step rows' changes, written at flush; merged so that each row is updated once.
        self.step_updates: dict[int, dict[str, Any]] = {}
        # New rows whose ids nobody reads (a new run's steps), written at flush.
        self.inserts: list[StepRun] = []
        self._states = states

    @property
    def states(self) -> dict[str, engine.StepState]:
        if self._states is None:
            self._states = fastpath.read_states(self.run.pk)
        return self._states

    def set_state(
        self, name: str, step_id: int, status: str, generation: int, attempt: int
    ) -> None:
        self.states[name] = engine.StepState(step_id, status, generation, attempt)

    def audit(self, event: str, **fields: Any) -> None:
        fields.setdefault("actor", self.actor)
        self.chain.add(event, now=self.now, **fields)

    def emit(self, event: str, **payload: Any) -> None:
        """Tell event hooks after commit; what durable hooks want goes to the outbox,
        in this transaction's own write."""
        org_id = self.run.organization_id
        data = event_payload(
            event,
            run_id=self.run.pk,
            pipeline=self.version.pipeline_name,
            organization_id=org_id,
            **payload,
        )
        events.emit_after_commit(event, data)
        row = outbox.gated_row(event, data, org_id)
        if isinstance(row, outbox.GatedRow):
            self.gated.append(row)
        elif row is not None:
            self.outbox.append(row)

    def checkpoint(self, kind: str, **fields: Any) -> None:
        self.run.checkpoint_seq += 1
        self.checkpoints.append(
            Checkpoint(
                organization_id=self.run.organization_id,
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
                    organization_id=self.run.organization_id,
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
        found = fastpath.step_outputs(ids)
        for name, state in self.states.items():
            pending = self.step_updates.get(state.id, {})
            if name in names and "outputs" in pending:
                found[name] = pending["outputs"]  # written by this transaction, not yet flushed
        return found

    def snapshot(self) -> Snapshot | None:
        return Snapshot(self.run, self._states) if self._states is not None else None

    def flush(self, *, commit: bool = False) -> None:
        """Write everything this transaction changed, in one round trip where possible.

        With `commit` the same round trip commits the transaction (see `locked_run`).
        """
        if not (
            self.chain.entries
            or self.inserts
            or self.checkpoints
            or self.step_updates
            or self.run_fields
            or self.outbox
            or self.gated
        ):
            return
        # Before the writes: with `commit` nothing may fail once they are sent, or the
        # transaction would be committed while Django, seeing the error, drops its
        # on-commit callbacks (the messages that move the run on). A bad sink setting
        # raises here, and nothing is written.
        self.outbox.extend(sinks.outbox_rows(self.chain.entries))
        batch = fastpath.Batch()
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
        batch.insert(self.inserts)
        batch.insert(self.chain.entries)
        batch.insert(self.checkpoints)
        # In the same round trip as the change that caused them, and so in its commit.
        batch.insert(self.outbox)
        if self.outbox:
            outbox.relay_on_commit()
        for gated in self.gated:
            batch.insert_where(gated.row, gated.condition, gated.params)
        stale = f"run {self.run.pk} changed after revision {self.run.revision}"
        try:
            updated = batch.execute(commit=commit)
        except fastpath.Stale as exc:
            raise StaleRun(stale) from exc
        except IntegrityError as exc:  # a concurrent writer took these sequence numbers
            if self.expect_revision is None:
                raise
            raise StaleRun(str(exc)) from exc
        if not updated:
            raise StaleRun(stale)
        if batch.written:
            # Still inside the atomic block: the relay goes out as Django ends it.
            outbox.relay_on_commit()
        # Counted as written (a transaction rolled back later still counts): a step's
        # path schedules nothing after commit for a counter.
        metrics.AUDIT_ENTRIES.inc(len(self.chain.entries))
        self.run.revision += 1
        self.chain.entries, self.checkpoints, self.step_updates, self.run_fields = [], [], {}, {}
        self.outbox, self.gated, self.inserts = [], [], []


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


def pipeline_audit(pipeline: Pipeline, entries: list[tuple[str, Any, dict[str, Any]]]) -> None:
    """Entries (event, actor, data) in the pipeline's own chain, for changes that belong to
    no run (its schedules, hooks, grants). The caller holds the pipeline's row lock and is
    in the transaction of the change; the audit sinks hear of them after its commit."""
    if not entries:
        return
    chain = AuditChain(pipeline, pipeline.pk)
    for event, actor, data in entries:
        chain.add(event, actor=actor if permissions.is_person(actor) else None, data=data)
    chain.flush()
    Pipeline.objects.filter(pk=pipeline.pk).update(
        audit_seq=pipeline.audit_seq, audit_head=pipeline.audit_head
    )
    if settings.FIREFLY_AUDIT_SINKS:
        outbox.relay_on_commit()


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
            run, states = fastpath.lock_run(run_id)
            if run is None:
                raise NotFound(f"No run {run_id}.")
            txn = RunTxn(run, actor, states)
        yield txn
        # When this block is the whole transaction, its last round trip commits it too:
        # the commit as this block ends then has nothing left to send.
        txn.flush(commit=whole_transaction())


def whole_transaction() -> bool:
    """Whether the innermost atomic block is the whole transaction (PostgreSQL), so that
    a flush may end it with its COMMIT. Nothing may be written after such a flush."""
    return (
        connection.vendor == "postgresql"
        and len(connection.atomic_blocks) == 1
        and not connection.needs_rollback
    )


def step_states(run_id: int) -> dict[str, engine.StepState]:
    """Each step's current attempt, as the engine sees it (a plain read, no lock)."""
    return fastpath.read_states(run_id)
