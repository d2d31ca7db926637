"""Runs executed end to end by a real Celery worker on PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.db import connection
from kombu import Queue

from firefly_site.celery import app
from pipelines import dispatch, services
from pipelines.audit import chains, verify_chain
from pipelines.models import AuditEntry, Checkpoint, Run, StepRun
from pipelines.tasks import execute_step
from tests.conftest import wait_finished, wait_for
from tests.workers import WorkerProcess

pytestmark = pytest.mark.worker

ECHO = {"callable": "tests.pipelines.callables.echo"}


def succeeded_entries(run: Run) -> Counter[str]:
    events = AuditEntry.objects.filter(run=run, event="step.succeeded")
    return Counter(events.values_list("step_name", flat=True))


def test_linear_run_commits_each_step_once_with_checkpoint_and_audit(worker, make_pipeline):
    name = make_pipeline(
        [
            {
                "name": "a",
                "type": "python",
                "config": {"callable": "tests.pipelines.callables.value"},
            },
            {
                "name": "b",
                "type": "python",
                "after": ["a"],
                "config": {"callable": "tests.pipelines.callables.add", "plus": 10},
            },
            {"name": "c", "type": "noop", "after": ["b"]},
        ],
        output=["b"],
    )
    run = wait_finished(services.run_start(pipeline=name, inputs={"value": 5}))

    assert run.status == Run.Status.SUCCEEDED
    assert run.output == {"b": {"total": 15}}
    assert list(run.steps.values_list("step_name", "status")) == [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("c", "succeeded"),
    ]
    checkpoints = list(Checkpoint.objects.filter(run=run).values_list("seq", "step_name", "status"))
    assert checkpoints == [(1, "a", "succeeded"), (2, "b", "succeeded"), (3, "c", "succeeded")]
    events = list(
        AuditEntry.objects.filter(run=run).order_by("seq").values_list("event", "step_name")
    )
    assert events == [
        ("run.created", ""),
        ("run.started", ""),
        ("step.succeeded", "a"),
        ("step.succeeded", "b"),
        ("step.succeeded", "c"),
        ("run.finished", ""),
    ]
    # One entry per node visit, carrying when the step started and how long it took.
    visit = AuditEntry.objects.get(run=run, step_name="b")
    assert visit.started_at <= visit.completed_at
    assert visit.latency_ms is not None
    assert visit.outputs == {"total": 15}


def test_diamond_branches_run_in_parallel_and_join_waits(worker, make_pipeline):
    name = make_pipeline(
        [
            {"name": "start", "type": "noop"},
            {"name": "left", "type": "sleep", "after": ["start"], "config": {"seconds": 0.6}},
            {"name": "right", "type": "sleep", "after": ["start"], "config": {"seconds": 0.6}},
            {"name": "join", "type": "python", "after": ["left", "right"], "config": ECHO},
        ]
    )
    run = wait_finished(services.run_start(pipeline=name, inputs={}))

    assert run.status == Run.Status.SUCCEEDED
    steps = {step.step_name: step for step in run.steps.all()}
    left, right, join = steps["left"], steps["right"], steps["join"]
    # The branches overlap in time: each started before the other finished.
    assert left.started_at < right.finished_at
    assert right.started_at < left.finished_at
    assert left.finished_at is not None
    assert right.finished_at is not None
    assert join.started_at >= max(left.finished_at, right.finished_at)
    assert set(join.outputs["upstream"]) == {"left", "right"}


def test_a_wide_fan_out_runs_and_commits_every_branch_once(worker, make_pipeline):
    # Outcomes of branches that finish together are committed together (one worker
    # process, eight threads): each branch still runs and commits exactly once.
    branches = [f"b{i:02d}" for i in range(12)]
    name = make_pipeline(
        [
            {"name": "start", "type": "noop"},
            *(
                {"name": b, "type": "sleep", "after": ["start"], "config": {"seconds": 0.3}}
                for b in branches
            ),
            {"name": "join", "type": "python", "after": branches, "config": ECHO},
        ]
    )
    run = wait_finished(services.run_start(pipeline=name, inputs={}))

    assert run.status == Run.Status.SUCCEEDED
    assert succeeded_entries(run) == dict.fromkeys(["start", *branches, "join"], 1)
    assert run.steps.count() == 14
    assert run.checkpoints.count() == 14
    assert set(run.steps.get(step_name="join").outputs["upstream"]) == set(branches)
    assert not AuditEntry.objects.filter(run=run, event="step.outcome_dropped").exists()
    assert all(verify_chain(*found) is None for found in chains(run.pk))


def test_when_condition_skips_the_branch_not_taken(worker, make_pipeline):
    name = make_pipeline(
        [
            {
                "name": "pick",
                "type": "python",
                "config": {"callable": "tests.pipelines.callables.pick"},
            },
            {
                "name": "prod",
                "type": "noop",
                "after": ["pick"],
                "when": {"step": "pick", "path": "env", "in": ["prod"]},
            },
            {
                "name": "staging",
                "type": "noop",
                "after": ["pick"],
                "when": {"step": "pick", "path": "env", "equals": "staging"},
            },
            {"name": "after_staging", "type": "noop", "after": ["staging"]},
            {"name": "done", "type": "noop", "after": ["prod", "staging"]},
        ]
    )
    run = wait_finished(services.run_start(pipeline=name, inputs={"env": "prod"}))

    assert run.status == Run.Status.SUCCEEDED
    statuses = dict(run.steps.values_list("step_name", "status"))
    assert statuses == {
        "pick": "succeeded",
        "prod": "succeeded",
        "staging": "skipped",
        "after_staging": "skipped",
        "done": "succeeded",
    }
    skipped = run.steps.get(step_name="staging")
    assert "condition not met" in skipped.error


def test_retry_succeeds_on_the_second_attempt(worker, make_pipeline):
    name = make_pipeline(
        [
            {
                "name": "flaky",
                "type": "fail",
                "config": {"times": 1, "message": "boom"},
                "retries": 2,
                "retry_backoff_s": 0.1,
            }
        ]
    )
    run = wait_finished(services.run_start(pipeline=name, inputs={}))

    assert run.status == Run.Status.SUCCEEDED
    attempts = list(run.steps.order_by("attempt").values_list("attempt", "status", "error"))
    assert attempts[0][:2] == (1, "failed")
    assert "boom" in attempts[0][2]
    assert attempts[1][:2] == (2, "succeeded")
    assert len(attempts) == 2


def test_failure_then_resume_runs_only_what_failed(worker, make_pipeline):
    name = make_pipeline(
        [
            {"name": "first", "type": "python", "config": ECHO},
            {
                "name": "flaky",
                "type": "fail",
                "after": ["first"],
                "config": {"times": 1, "message": "not yet"},
            },
            {"name": "last", "type": "noop", "after": ["flaky"]},
        ]
    )
    run = wait_finished(services.run_start(pipeline=name, inputs={}))
    assert run.status == Run.Status.FAILED
    assert "not yet" in run.error
    assert run.steps.get(step_name="last").status == "pending"

    services.run_resume(run_id=run.pk)
    run = wait_finished(run)

    assert run.status == Run.Status.SUCCEEDED
    assert run.steps.filter(step_name="first").count() == 1
    assert list(run.steps.filter(step_name="flaky").values_list("attempt", "status")) == [
        (1, "failed"),
        (2, "succeeded"),
    ]
    assert succeeded_entries(run) == {"first": 1, "flaky": 1, "last": 1}
    assert AuditEntry.objects.filter(run=run, event="run.resumed").count() == 1


def test_cancel_mid_run_drops_the_late_outcome(worker, make_pipeline):
    name = make_pipeline(
        [
            {"name": "slow", "type": "sleep", "config": {"seconds": 1.0}},
            {"name": "never", "type": "noop", "after": ["slow"]},
        ]
    )
    run = services.run_start(pipeline=name, inputs={})
    wait_for(
        lambda: run.steps.filter(step_name="slow", status="running").exists(),
        message="slow to start",
    )

    services.run_cancel(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    wait_for(
        lambda: AuditEntry.objects.filter(
            run=run, event="step.outcome_dropped", step_name="slow"
        ).exists(),
        message="the late outcome to be dropped",
    )
    statuses = dict(run.steps.values_list("step_name", "status"))
    assert statuses == {"slow": "cancelled", "never": "cancelled"}
    assert not AuditEntry.objects.filter(run=run, event="step.succeeded").exists()


def test_a_chained_steps_outcome_built_on_a_stale_run_commits_nothing(worker, make_pipeline):
    # `slow` runs in the worker that committed `first`, on that commit's snapshot of the
    # run. The cancel changes the run meanwhile: the outcome's first write finds another
    # revision, and everything sent with it (its commit included) must not take effect.
    name = make_pipeline(
        [
            {"name": "first", "type": "noop"},
            {"name": "slow", "type": "sleep", "after": ["first"], "config": {"seconds": 1.0}},
            {"name": "never", "type": "noop", "after": ["slow"]},
        ]
    )
    run = services.run_start(pipeline=name, inputs={})
    wait_for(
        lambda: run.steps.filter(step_name="slow", status="running").exists(),
        message="slow to start",
    )
    services.run_cancel(run_id=run.pk)
    wait_for(
        lambda: AuditEntry.objects.filter(run=run, event="step.outcome_dropped").exists(),
        message="the late outcome to be dropped",
    )

    statuses = dict(run.steps.values_list("step_name", "status"))
    assert statuses == {"first": "succeeded", "slow": "cancelled", "never": "cancelled"}
    assert succeeded_entries(run) == {"first": 1}
    assert not run.checkpoints.filter(step_name="slow").exists()
    assert all(verify_chain(*found) is None for found in chains(run.pk))


def test_fork_from_a_middle_checkpoint_reruns_only_later_steps(worker, make_pipeline):
    name = make_pipeline(
        [
            {"name": "a", "type": "python", "config": ECHO},
            {"name": "b", "type": "python", "after": ["a"], "config": ECHO},
            {"name": "c", "type": "python", "after": ["b"], "config": ECHO},
        ]
    )
    source = wait_finished(services.run_start(pipeline=name, inputs={"x": 1}))
    first = Checkpoint.objects.get(run=source, step_name="a")

    fork = wait_finished(services.run_fork(run_id=source.pk, checkpoint_seq=first.seq))

    assert fork.status == Run.Status.SUCCEEDED
    assert fork.forked_from == source
    assert fork.inputs == {"x": 1}
    assert succeeded_entries(fork) == {"b": 1, "c": 1}
    copied = fork.steps.get(step_name="a")
    assert copied.outputs == source.steps.get(step_name="a").outputs
    assert copied.inputs == {"forked_from_step_run": source.steps.get(step_name="a").pk}


def test_duplicate_execute_step_message_commits_the_step_once(worker, make_pipeline):
    name = make_pipeline([{"name": "only", "type": "sleep", "config": {"seconds": 0.3}}])
    run = services.run_start(pipeline=name, inputs={})
    step = wait_for(
        lambda: run.steps.filter(status__in=["queued", "running"]).first(), message="queued"
    )
    for _ in range(3):
        execute_step.delay(step.pk)

    run = wait_finished(run)

    assert run.status == Run.Status.SUCCEEDED
    assert succeeded_entries(run) == {"only": 1}
    assert Checkpoint.objects.filter(run=run, step_name="only").count() == 1
    assert run.steps.count() == 1


def test_worker_killed_mid_step_recovers_through_the_reaper(worker, make_pipeline, settings):
    worker.stop()
    short_lease = WorkerProcess("short-lease", env={"FIREFLY_STEP_LEASE_S": "1.5"})
    short_lease.start()
    try:
        name = make_pipeline(
            [
                {"name": "before", "type": "noop"},
                {"name": "slow", "type": "sleep", "after": ["before"], "config": {"seconds": 1.5}},
                {"name": "after", "type": "noop", "after": ["slow"]},
            ]
        )
        run = services.run_start(pipeline=name, inputs={})
        wait_for(
            lambda: run.steps.filter(step_name="slow", status="running").exists(),
            message="slow running",
        )

        short_lease.kill()
        short_lease.start()
        settings.FIREFLY_REQUEUE_AFTER_S = 1

        def recovered() -> bool:
            services.reap()
            run.refresh_from_db()
            return run.is_finished

        wait_for(recovered, timeout=30, message="the run to recover")
    finally:
        short_lease.stop()
        worker.start()

    assert run.status == Run.Status.SUCCEEDED
    attempts = list(
        run.steps.filter(step_name="slow").order_by("attempt").values_list("status", "error")
    )
    assert [status for status, _ in attempts] == ["failed", "succeeded"]
    assert "worker lost" in attempts[0][1]
    assert succeeded_entries(run) == {"before": 1, "slow": 1, "after": 1}
    assert AuditEntry.objects.filter(run=run, event="step.lost").count() == 1
    assert StepRun.objects.filter(run=run).count() == 4


def test_a_step_over_its_timeout_fails(worker, make_pipeline):
    name = make_pipeline(
        [{"name": "slow", "type": "sleep", "config": {"seconds": 5}, "timeout_s": 0.3}]
    )
    run = wait_finished(services.run_start(pipeline=name, inputs={}))
    assert run.status == Run.Status.FAILED
    step = run.steps.get()
    assert "timed out after 0.3s" in step.error
    assert (step.finished_at - step.started_at).total_seconds() < 2


def test_on_failure_continue_and_skip_downstream(worker, make_pipeline):
    name = make_pipeline(
        [
            {"name": "tolerated", "type": "fail", "on_failure": "continue"},
            {"name": "after_tolerated", "type": "noop", "after": ["tolerated"]},
            {"name": "broken", "type": "fail", "on_failure": "skip_downstream"},
            {"name": "after_broken", "type": "noop", "after": ["broken"]},
            {"name": "independent", "type": "noop"},
        ]
    )
    run = wait_finished(services.run_start(pipeline=name, inputs={}))
    statuses = dict(run.steps.values_list("step_name", "status"))
    assert statuses == {
        "tolerated": "failed",
        "after_tolerated": "succeeded",
        "broken": "failed",
        "after_broken": "skipped",
        "independent": "succeeded",
    }
    # A skip_downstream failure still fails the run (it can be resumed); continue does not.
    assert run.status == Run.Status.FAILED


def test_the_reaper_resends_lost_messages_and_advances_stalled_runs(
    worker, make_pipeline, monkeypatch, settings
):
    name = make_pipeline(
        [{"name": "a", "type": "noop"}, {"name": "b", "type": "noop", "after": ["a"]}]
    )
    sent = dispatch.execute_steps
    # The broker "loses" every message: the run is created and its first step queued,
    # but nothing reaches a worker.
    monkeypatch.setattr(dispatch, "advance_run", lambda run_id: None)
    monkeypatch.setattr(dispatch, "execute_steps", lambda ids, countdown=0: None)
    # Left pending for an advance_run that was lost (as a fork's can be), and started
    # with its first step queued, whose message was lost.
    stalled = services.run_start(pipeline=name, inputs={}, advance=False)
    queued = services.run_start(pipeline=name, inputs={})
    assert queued.steps.get(step_name="a").status == "queued"
    monkeypatch.setattr(dispatch, "execute_steps", sent)
    settings.FIREFLY_REQUEUE_AFTER_S = 0

    report = services.reap()

    assert report.resent == 1
    assert report.advanced >= 1
    assert wait_finished(stalled).status == Run.Status.SUCCEEDED
    assert wait_finished(queued).status == Run.Status.SUCCEEDED


def test_the_reaper_adds_no_duplicate_while_the_message_still_waits(
    worker, make_pipeline, settings
):
    """A step behind a backlog, or for a queue no worker consumes, is not lost."""
    name = make_pipeline([{"name": "crunch", "type": "noop", "queue": "firefly-tests-nobody"}])
    nobody = Queue("firefly-tests-nobody")
    run = services.run_start(pipeline=name, inputs={})
    wait_for(lambda: run.steps.filter(status="queued").exists(), message="crunch queued")
    settings.FIREFLY_REQUEUE_AFTER_S = 0
    with app.connection_for_write() as broker:
        try:
            report = services.reap()
            assert (report.waiting, report.resent) == (1, 0)
            assert nobody(broker).queue_declare(passive=True).message_count == 1

            nobody(broker).purge()  # the broker loses the message
            report = services.reap()
            assert (report.waiting, report.resent) == (0, 1)
            assert nobody(broker).queue_declare(passive=True).message_count == 1
        finally:
            nobody(broker).purge()


def test_a_step_with_a_queue_runs_on_the_workers_of_that_queue(worker, make_pipeline):
    """CPU-heavy steps can go to a prefork worker; a chain leaves it for the next step."""
    where = {"callable": "tests.pipelines.callables.where"}
    name = make_pipeline(
        [
            {"name": "before", "type": "python", "config": where},
            {
                "name": "crunch",
                "type": "python",
                "after": ["before"],
                "config": where,
                "queue": "cpu",
            },
            {"name": "after", "type": "python", "after": ["crunch"], "config": where},
        ]
    )
    cpu = WorkerProcess("cpu", concurrency=1, pool="prefork", queues="cpu")
    cpu.start()
    try:
        run = wait_finished(services.run_start(pipeline=name, inputs={}))
    finally:
        cpu.stop()

    assert run.status == Run.Status.SUCCEEDED
    ran_on = dict(run.steps.values_list("step_name", "outputs__worker"))
    assert ran_on == {"before": worker.node, "crunch": cpu.node, "after": worker.node}


def test_a_worker_thread_keeps_its_connection_and_replaces_a_broken_one(worker, make_pipeline):
    """No new PostgreSQL connection per task; one killed under it is noticed and replaced."""
    step = {"type": "python", "config": {"callable": "tests.pipelines.callables.backend"}}
    name = make_pipeline([{"name": "pid", "queue": "keep", **step}], output=["pid"])
    keeper = WorkerProcess("keep", concurrency=1, queues="keep", env={"CONN_MAX_AGE": "300"})
    keeper.start()
    try:

        def backend_pid() -> int:
            run = wait_finished(services.run_start(pipeline=name, inputs={}))
            assert run.status == Run.Status.SUCCEEDED, run.error
            return run.output["pid"]["pid"]

        first = backend_pid()
        assert backend_pid() == first
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first])
        assert backend_pid() != first
    finally:
        keeper.stop()


def test_a_test_without_the_worker_fixture_keeps_its_steps(
    transactional_db, worker_process, make_pipeline
):
    """The session's worker is up, but this test's messages go where it does not listen."""
    assert worker_process.process is not None
    assert worker_process.process.poll() is None  # up
    run = services.run_start(pipeline=make_pipeline([{"name": "only", "type": "noop"}]), inputs={})
    time.sleep(1)
    run.refresh_from_db()
    # Queued as it started, and still queued: no worker took its message.
    assert run.status == Run.Status.RUNNING
    assert list(run.steps.values_list("status", flat=True)) == [StepRun.Status.QUEUED]
