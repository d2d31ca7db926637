"""The raw-SQL fast path on PostgreSQL: pipelined writes whose COMMIT must not outrun an error."""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from pipelines import dispatch, fastpath, services
from pipelines.audit import AuditChain, chains, verify_chain
from pipelines.models import AuditEntry, Checkpoint, Run, StepRun
from pipelines.services import Outcome, OutcomeQueue, StaleRun, Started, locked_run
from pipelines.services.execution import commit_outcome
from tests.approvals.conftest import drive
from tests.conftest import wait_for
from tests.races import in_thread, race

S = StepRun.Status

CHAIN = [{"name": "a", "type": "noop"}, {"name": "b", "type": "noop", "after": ["a"]}]
FAN_OUT = [
    {"name": "p1", "type": "noop"},
    {"name": "p2", "type": "noop"},
    {"name": "p3", "type": "noop"},
    {"name": "p4", "type": "noop"},
    {"name": "join", "type": "noop", "after": ["p1", "p2", "p3", "p4"]},
]
LATE = ("p2", "p3", "p4")  # the fan-out's outcomes committed together, one of them refused
RUN_FIELDS = ("status", "revision", "audit_seq", "audit_head", "checkpoint_seq", "error")


def run_row(run: Run) -> tuple[Any, ...]:
    return tuple(Run.objects.filter(pk=run.pk).values_list(*RUN_FIELDS).get())


def rows_of(run: Run) -> tuple[int, int, int]:
    return (
        AuditEntry.objects.filter(run=run).count(),
        Checkpoint.objects.filter(run=run).count(),
        StepRun.objects.filter(run=run).count(),
    )


def chain_verifies(run: Run) -> bool:
    return all(verify_chain(*found) is None for found in chains(run.pk))


def latest_steps(run: Run) -> dict[str, tuple[str, int]]:
    return {n: (st.status, st.attempt) for n, st in services.step_states(run.pk).items()}


def note(run: Run) -> None:
    """Another transaction changes the run: one audit entry, a new revision."""
    with locked_run(run.pk) as txn:
        txn.audit("run.note", data={"note": "a change the snapshot does not know of"})


def touch(run: Run) -> None:
    """Another transaction changes the run row alone: a new revision, no sequence taken."""
    with locked_run(run.pk) as txn:
        txn.set_run(error="")


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The `commit` each Batch.execute was called with, in order."""
    seen: list[bool] = []
    execute = fastpath.Batch.execute

    def spy(self: fastpath.Batch, *, commit: bool = False) -> int:
        seen.append(commit)
        return execute(self, commit=commit)

    monkeypatch.setattr(fastpath.Batch, "execute", spy)
    return seen


def begin(run: Run, name: str) -> Started:
    """Claim a queued step as a worker does."""
    step = StepRun.objects.get(run=run, step_name=name, status=S.QUEUED)
    started = services.step_begin(step_run_id=step.pk)
    assert started is not None
    return started


def commit_on_snapshot(started: Started, outcome: Outcome) -> None:
    """What step_finish tries first: the outcome on the worker's own snapshot of the run."""
    assert started.snapshot is not None
    with locked_run(started.step.run.pk, known=started.snapshot) as txn:
        commit_outcome(txn, started.step, outcome)


def write_then_collide(run: Run) -> None:
    """One pipelined batch and its COMMIT: the run row, an audit entry, then a duplicate."""
    pipeline_id = services.version_info(run.pipeline_version_id).pipeline_id
    with transaction.atomic():
        locked, _ = fastpath.lock_run(run.pk)
        assert locked is not None
        revision = locked.revision
        chain = AuditChain(locked, pipeline_id)
        chain.add("run.note", now=timezone.now(), data={"note": "never committed"})
        batch = fastpath.Batch()
        batch.update(
            Run,
            run.pk,
            {
                "revision": revision + 1,
                "audit_seq": locked.audit_seq,
                "audit_head": locked.audit_head,
                "error": "never committed",
            },
            expect={"revision": revision},
        )
        batch.insert(chain.entries)
        # Last, just before the COMMIT: a checkpoint whose (run, seq) the run already has.
        batch.insert(
            [
                Checkpoint(
                    organization_id=run.organization_id,
                    run_id=run.pk,
                    seq=1,
                    generation=1,
                    step_name="a",
                )
            ]
        )
        batch.execute(commit=True)


# With an audit entry, the stale write would also collide on the chain's next sequence;
# a change to the run row alone leaves the revision as the only guard.
@pytest.mark.parametrize("change", [note, touch], ids=["audit-entry", "run-row-only"])
def test_a_stale_snapshot_with_the_commit_pipelined_raises_and_writes_nothing(
    transactional_db, make_pipeline, commits, change
):
    run = services.run_start(pipeline=make_pipeline(CHAIN), inputs={})
    services.run_advance(run_id=run.pk)
    # `a`'s outcome commits and hands this worker `b`, with the snapshot of that commit.
    started_b = services.step_finish(started=begin(run, "a"), outcome=Outcome(outputs={}))
    assert started_b is not None
    assert started_b.snapshot is not None
    assert started_b.step.step_name == "b"

    change(run)
    assert run_row(run)[1] == started_b.snapshot.revision + 1
    before, rows = run_row(run), rows_of(run)
    del commits[:]

    outcome = Outcome(outputs={"late": True}, finished_at=timezone.now())
    with pytest.raises(StaleRun):
        commit_on_snapshot(started_b, outcome)
    assert commits == [True]  # the guarded UPDATE and the COMMIT went in one pipeline

    assert run_row(run) == before
    assert rows_of(run) == rows
    assert latest_steps(run)["b"] == (S.RUNNING, 1)
    assert not AuditEntry.objects.filter(run=run, step_name="b").exists()
    assert not Checkpoint.objects.filter(run=run, step_name="b").exists()
    assert chain_verifies(run)


def test_a_failing_last_statement_of_a_pipelined_batch_commits_nothing(
    transactional_db, make_pipeline
):
    run = drive(services.run_start(pipeline=make_pipeline(CHAIN), inputs={}))
    assert run.status == Run.Status.SUCCEEDED
    assert run.checkpoint_seq == 2
    before, rows = run_row(run), rows_of(run)

    with pytest.raises(IntegrityError, match="checkpoint_unique_seq"):
        write_then_collide(run)

    assert run_row(run) == before
    assert rows_of(run) == rows
    assert not AuditEntry.objects.filter(run=run, event="run.note").exists()
    assert chain_verifies(run)


class RunLock:
    """Holds a run's row lock from another connection until released."""

    def __init__(self, run_id: int) -> None:
        self.held, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(run_id,))
        self.thread.start()
        assert self.held.wait(10)

    def _hold(self, run_id: int) -> None:
        try:
            with transaction.atomic():
                Run.objects.select_for_update().get(pk=run_id)
                self.held.set()
                self.release.wait(20)
        finally:
            connection.close()


def test_a_failing_outcome_fails_its_whole_queue_batch_and_the_reaper_recovers_the_steps(
    transactional_db, make_pipeline
):
    queue = OutcomeQueue()
    run = services.run_start(pipeline=make_pipeline(FAN_OUT), inputs={})
    services.run_advance(run_id=run.pk)
    started = {name: begin(run, name) for name in ("p1", "p2", "p3", "p4")}
    ok = Outcome(outputs={"ok": True}, started_at=timezone.now(), finished_at=timezone.now())
    # Past the handler's check (which refuses it): PostgreSQL stores no NUL in jsonb.
    refused = Outcome(
        outputs={"text": "nul\x00byte"}, started_at=ok.started_at, finished_at=ok.finished_at
    )

    def waiting(users: int, pending: int) -> Callable[[], bool]:
        def check() -> bool:
            found = queue.runs.get(run.pk)
            return found is not None and (found.users, len(found.pending)) == (users, pending)

        return check

    # p1's thread takes its turn and blocks on the run lock; p2, p3 and p4 arrive at once
    # meanwhile, so whoever's turn comes next commits the three of them together.
    lock = RunLock(run.pk)
    first, first_result = in_thread(lambda: queue.commit(started["p1"], ok))
    wait_for(waiting(users=1, pending=0), timeout=5, message="p1 to take its turn")
    racing, results = in_thread(
        lambda: race(
            lambda: queue.commit(started["p2"], ok),
            lambda: queue.commit(started["p3"], refused),
            lambda: queue.commit(started["p4"], ok),
        )
    )
    wait_for(waiting(users=4, pending=3), timeout=5, message="p2, p3 and p4 to queue up")
    lock.release.set()
    for thread in (lock.thread, first, racing):
        thread.join(timeout=20)

    assert first_result == [None]  # committed alone; `join` still waits for the others
    [outcomes] = results
    assert len(outcomes) == 3
    assert all(isinstance(result, DataError) for result in outcomes), outcomes
    assert not queue.runs  # nobody left waiting

    steps = latest_steps(run)
    assert steps["p1"] == (S.SUCCEEDED, 1)
    assert [steps[name] for name in LATE] == [(S.RUNNING, 1)] * 3
    succeeded = AuditEntry.objects.filter(run=run, event="step.succeeded")
    assert list(succeeded.values_list("step_name", flat=True)) == ["p1"]
    assert list(Checkpoint.objects.filter(run=run).values_list("step_name", flat=True)) == ["p1"]

    # Their worker holds outcomes nobody will commit: once their leases run out, the
    # reaper treats them as lost and gives each a new attempt.
    StepRun.objects.filter(run=run, status=S.RUNNING).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert services.reap().lost == 3
    steps = latest_steps(run)
    assert [steps[name] for name in LATE] == [(S.QUEUED, 2)] * 3
    lost = AuditEntry.objects.filter(run=run, event="step.lost")
    assert sorted(lost.values_list("step_name", flat=True)) == ["p2", "p3", "p4"]

    run = drive(run)
    assert run.status == Run.Status.SUCCEEDED
    assert latest_steps(run)["join"] == (S.SUCCEEDED, 1)
    assert chain_verifies(run)


def test_run_start_writes_its_steps_and_entry_in_the_round_trip_that_commits(
    transactional_db, make_pipeline, commits
):
    # Left pending (for a caller that advances it later): the steps are written with the
    # entry. A run started to go (the default) is tested below.
    run = services.run_start(pipeline=make_pipeline(FAN_OUT), inputs={}, advance=False)

    assert commits == [True]  # the run row's change, the steps, the entry and the COMMIT
    assert not connection.in_atomic_block
    assert sorted(StepRun.objects.filter(run=run).values_list("step_name", "status")) == [
        (name, S.PENDING) for name in ("join", "p1", "p2", "p3", "p4")
    ]
    assert list(AuditEntry.objects.filter(run=run).values_list("event", flat=True)) == [
        "run.created"
    ]
    assert run_row(run)[:4] == (Run.Status.PENDING, 1, 1, run.audit_head)
    assert chain_verifies(run)
    assert drive(run).status == Run.Status.SUCCEEDED


def test_run_start_queues_the_first_steps_in_the_transaction_that_creates_the_run(
    transactional_db, make_pipeline, commits, monkeypatch
):
    sent: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        dispatch.app, "send_task", lambda name, args, **o: sent.append((name, args))
    )
    run = services.run_start(pipeline=make_pipeline(FAN_OUT), inputs={})

    assert commits == [True]  # the writes and the COMMIT in one round trip
    assert not connection.in_atomic_block
    steps = dict(StepRun.objects.filter(run=run).values_list("step_name", "status"))
    assert steps == {**dict.fromkeys(("p1", "p2", "p3", "p4"), S.QUEUED), "join": S.PENDING}
    entries = AuditEntry.objects.filter(run=run).order_by("seq")
    assert list(entries.values_list("event", "actor_name")) == [
        ("run.created", "system"),
        ("run.started", "system"),
    ]
    assert run_row(run)[0] == Run.Status.RUNNING
    # One message per first step, sent once the run was committed: no advance_run.
    queued = set(StepRun.objects.filter(run=run, status=S.QUEUED).values_list("pk", flat=True))
    assert sorted(name for name, _ in sent) == [dispatch.EXECUTE_STEP] * 4
    assert {args[0] for _, args in sent} == queued
    assert chain_verifies(run)
    assert drive(run).status == Run.Status.SUCCEEDED


def test_run_start_inside_a_callers_transaction_leaves_the_commit_to_it(
    transactional_db, make_pipeline, commits
):
    name = make_pipeline(CHAIN)

    def start_then_fail() -> None:
        with transaction.atomic():
            services.run_start(pipeline=name, inputs={})
            raise RuntimeError("the caller fails after starting the run")

    with pytest.raises(RuntimeError, match="the caller fails"):
        start_then_fail()

    assert commits == [False]
    assert not Run.objects.exists()
    assert not StepRun.objects.exists()
    assert not AuditEntry.objects.filter(run__isnull=False).exists()


def test_run_start_with_a_bad_sink_setting_writes_nothing(
    transactional_db, make_pipeline, settings
):
    name = make_pipeline(CHAIN)
    settings.FIREFLY_AUDIT_SINKS = ["kafka:topic"]

    with pytest.raises(ImproperlyConfigured, match="unknown sink"):
        services.run_start(pipeline=name, inputs={})

    assert not Run.objects.exists()
    assert not StepRun.objects.exists()


PARSE = re.compile(r'Parse\s+"[^"]*" "(.*)" \d+( \d+)*$')  # name, text, parameter types


class Wire:
    """What this connection sent PostgreSQL, from libpq's trace of the protocol; with
    nothing prepared meanwhile, so that each statement's text is sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __enter__(self) -> Wire:
        connection.ensure_connection()
        self.raw = connection.connection
        self.threshold, self.raw.prepare_threshold = self.raw.prepare_threshold, None
        self.file = tempfile.TemporaryFile("w+")
        self.raw.pgconn.trace(self.file.fileno())
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.pgconn.untrace()
        self.raw.prepare_threshold = self.threshold
        self.file.seek(0)
        lines = [line.split("\t") for line in self.file.read().splitlines()]
        self.file.close()
        self.sent = [" ".join(fields[3:]) for fields in lines if fields[1:2] == ["F"]]

    def syncs(self) -> int:
        """Round trips: each ends with a Sync, and the client then waits for the server."""
        return sum(message == "Sync" for message in self.sent)

    def statements(self) -> list[str]:
        parsed = (PARSE.match(message) for message in self.sent)
        return [found[1] for found in parsed if found]


def test_a_step_commits_in_as_many_round_trips_as_it_has_reads_the_begin_sent_with_the_first(
    transactional_db, make_pipeline
):
    chain = [*CHAIN, {"name": "c", "type": "noop", "after": ["b"]}]
    run = services.run_start(pipeline=make_pipeline(chain), inputs={})
    started_a = begin(run, "a")

    # Without a snapshot: the lock and the steps' states (one trip, the BEGIN in it),
    # then the writes and the COMMIT, which also start `b` on this worker.
    with Wire() as first:
        started_b = services.step_finish(started=started_a, outcome=Outcome(outputs={}))
    assert started_b is not None
    assert started_b.snapshot is not None
    assert first.syncs() == 2
    assert first.statements()[0] == "BEGIN"
    assert first.statements()[1].startswith('SELECT "id"')
    assert first.statements()[-1] == "COMMIT"

    # On the snapshot of that commit: no read, so the BEGIN, the writes and the COMMIT
    # go in one round trip.
    with Wire() as chained:
        started_c = services.step_finish(started=started_b, outcome=Outcome(outputs={}))
    assert started_c is not None
    assert chained.syncs() == 1
    assert chained.statements()[0] == "BEGIN"
    assert chained.statements()[1].startswith('WITH changed AS (UPDATE "pipelines_run"')
    assert chained.statements()[-1] == "COMMIT"

    services.step_finish(started=started_c, outcome=Outcome(outputs={}))
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert chain_verifies(run)
    assert not connection.in_atomic_block
    assert connection.connection.autocommit  # psycopg's, as Django left it
