"""Faults on one host with real workers: a frozen worker, a long step, recovery caps, a roll
back under a running step."""

from __future__ import annotations

import os
import signal

import pytest

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines import services
from pipelines.audit import chains, verify_chain
from pipelines.models import AuditEntry, Run, StepRun
from tests.conftest import audit_counts, reap_until_finished, wait_finished, wait_for
from tests.workers import WorkerProcess

pytestmark = pytest.mark.worker

LEASE = {"FIREFLY_STEP_LEASE_S": "1.5"}


def test_a_frozen_worker_past_its_lease_loses_the_step_and_its_late_outcome_is_dropped(
    worker, make_pipeline, settings
):
    """SIGSTOP a worker mid-step (a zombie: alive, holding the step, renewing nothing); the
    reaper hands the step to another worker; SIGCONT: the zombie's outcome is refused,
    fenced by the attempt it held, so the step commits exactly once."""
    worker.stop()
    zombie = WorkerProcess("zombie", env=LEASE)
    rescuer = WorkerProcess("rescuer", env=LEASE)
    zombie.start()
    try:
        name = make_pipeline(
            [
                {"name": "before", "type": "noop"},
                {"name": "slow", "type": "sleep", "after": ["before"], "config": {"seconds": 2}},
                {"name": "after", "type": "noop", "after": ["slow"]},
            ]
        )
        run = services.run_start(pipeline=name, inputs={})
        wait_for(
            lambda: run.steps.filter(step_name="slow", status="running").exists(),
            message="slow running on the zombie",
        )
        assert zombie.process is not None
        os.killpg(zombie.process.pid, signal.SIGSTOP)
        rescuer.start()
        settings.FIREFLY_REQUEUE_AFTER_S = 1
        run = reap_until_finished(run)
        assert run.status == Run.Status.SUCCEEDED

        os.killpg(zombie.process.pid, signal.SIGCONT)
        wait_for(
            lambda: AuditEntry.objects.filter(run=run, event="step.outcome_dropped").exists(),
            timeout=20,
            message="the zombie's late outcome to be dropped",
        )
    finally:
        if zombie.process is not None and zombie.process.poll() is None:
            os.killpg(zombie.process.pid, signal.SIGCONT)
        zombie.stop()
        rescuer.stop()
        worker.start()

    attempts = list(
        run.steps.filter(step_name="slow").order_by("attempt").values_list("status", "error")
    )
    assert [status for status, _ in attempts] == ["failed", "succeeded"]
    assert "worker lost" in attempts[0][1]
    assert audit_counts(run, "step.succeeded") == {"before": 1, "slow": 1, "after": 1}
    assert audit_counts(run, "step.outcome_dropped") == {"slow": 1}
    assert run.checkpoints.filter(step_name="slow").count() == 1
    assert all(verify_chain(*found) is None for found in chains(run.pk))


def test_lease_renewal_keeps_a_long_step_alive_through_many_reaper_passes(
    worker, make_pipeline, settings
):
    """A step four leases long is renewed by its worker: the reaper, run again and again
    meanwhile, never takes it away."""
    worker.stop()
    renewing = WorkerProcess("renewing", env=LEASE)
    renewing.start()
    try:
        name = make_pipeline([{"name": "long", "type": "sleep", "config": {"seconds": 6}}])
        run = services.run_start(pipeline=name, inputs={})
        wait_for(
            lambda: run.steps.filter(step_name="long", status="running").exists(),
            message="long running",
        )
        passes = 0

        def finished() -> bool:
            nonlocal passes
            report = services.reap()
            passes += 1
            assert report.lost == 0, "the reaper took a renewed step"
            run.refresh_from_db()
            return run.is_finished

        wait_for(finished, timeout=30, message="the long step to finish")
    finally:
        renewing.stop()
        worker.start()
    assert run.status == Run.Status.SUCCEEDED
    assert passes > 20
    assert StepRun.objects.filter(run=run).count() == 1
    assert not AuditEntry.objects.filter(run=run, event="step.lost").exists()


def test_a_step_whose_workers_keep_dying_fails_the_run_once_lost_retries_run_out(
    worker, make_pipeline, settings
):
    """FIREFLY_LOST_WORKER_RETRIES caps recovery: a step that kills every worker it runs
    on (here: every worker is killed while it runs) ends the run failed, not retried forever."""
    worker.stop()
    settings.FIREFLY_LOST_WORKER_RETRIES = 1
    settings.FIREFLY_REQUEUE_AFTER_S = 1
    doomed = WorkerProcess("doomed", env={**LEASE, "FIREFLY_LOST_WORKER_RETRIES": "1"})
    try:
        name = make_pipeline([{"name": "slow", "type": "sleep", "config": {"seconds": 30}}])
        doomed.start()
        run = services.run_start(pipeline=name, inputs={})
        for attempt in (1, 2):

            def running(attempt: int = attempt) -> bool:
                services.reap()  # hands a lost attempt on, once its lease ran out
                return run.steps.filter(attempt=attempt, status="running").exists()

            wait_for(running, timeout=30, message=f"attempt {attempt} running")
            doomed.kill()
            if attempt == 1:
                doomed.start()
        run = reap_until_finished(run)
    finally:
        doomed.stop()
        worker.start()
    assert run.status == Run.Status.FAILED
    statuses = list(run.steps.order_by("attempt").values_list("status", flat=True))
    assert statuses == ["failed", "failed"]
    assert AuditEntry.objects.filter(run=run, event="step.lost").count() == 2


def test_an_on_finish_over_its_timeout_fails_the_run_on_a_real_worker(worker, make_pipeline):
    worker.stop()
    impatient = WorkerProcess("impatient", env={"FIREFLY_ON_FINISH_TIMEOUT_S": "1"})
    impatient.start()
    try:
        name = make_pipeline(
            [{"name": "only", "type": "noop"}],
            on_finish="tests.pipelines.callables.sleepy_finalize",
        )
        run = wait_finished(services.run_start(pipeline=name, inputs={}), timeout=30)
    finally:
        impatient.stop()
        worker.start()
    assert run.status == Run.Status.FAILED
    assert "on_finish failed" in run.error
    assert "timed out after 1s" in run.error
    assert run.disposition is None  # the late finalize was not kept
    failed = AuditEntry.objects.get(run=run, event="run.on_finish_failed")
    assert "timed out" in failed.error_message
    assert audit_counts(run, "step.succeeded") == {"only": 1}


def test_an_on_finish_whose_workers_keep_dying_fails_the_run_at_the_attempt_cap(
    worker, make_pipeline, settings
):
    """FIREFLY_ON_FINISH_ATTEMPTS caps recovery of on_finish: every worker that runs it is
    killed, the reaper hands the finish on once the lease runs out, and the attempt past
    the cap closes the run failed instead of running on_finish forever."""
    worker.stop()
    settings.FIREFLY_ON_FINISH_ATTEMPTS = 2
    caps = {"FIREFLY_ON_FINISH_TIMEOUT_S": "1", "FIREFLY_ON_FINISH_ATTEMPTS": "2", **LEASE}
    doomed = WorkerProcess("doomed-finish", env=caps)
    try:
        name = make_pipeline(
            [{"name": "only", "type": "noop"}],
            on_finish="tests.pipelines.callables.stuck_finalize",
        )
        doomed.start()
        run = services.run_start(pipeline=name, inputs={})
        for attempt in (1, 2):

            def finishing(attempt: int = attempt) -> bool:
                services.reap()  # queues the finish again once the lease ran out
                return AuditEntry.objects.filter(
                    run=run, event="run.on_finish_started", data__attempt=attempt
                ).exists()

            wait_for(finishing, timeout=30, message=f"on_finish attempt {attempt}")
            doomed.kill()
            doomed.start()
        run = reap_until_finished(run)
    finally:
        doomed.stop()
        worker.start()
    assert run.status == Run.Status.FAILED
    assert run.error == "on_finish lost its worker 2 times"
    assert run.finish_attempts == 2
    assert AuditEntry.objects.filter(run=run, event="run.on_finish_started").count() == 2
    assert audit_counts(run, "step.succeeded") == {"only": 1}
    assert all(verify_chain(*found) is None for found in chains(run.pk))


def test_a_roll_back_while_a_branch_runs_drops_the_branchs_late_outcome(
    worker, make_pipeline, users
):
    """A reviewer rolls the run back to its first step while a parallel branch is still
    running: that attempt belongs to the old generation, so its outcome is dropped, and
    the new generation runs the branch again and commits it once."""
    name = make_pipeline(
        [
            {"name": "start", "type": "noop"},
            {"name": "slow", "type": "sleep", "after": ["start"], "config": {"seconds": 2}},
            {
                "name": "review",
                "type": "approval",
                "after": ["start"],
                "config": {"assignee_role": "reviewers"},
            },
            {"name": "ship", "type": "noop", "after": ["slow", "review"]},
        ]
    )
    run = services.run_start(pipeline=name, inputs={}, actor=users["starter"])
    first = wait_for(
        lambda: HumanTask.objects.filter(run=run, status="open").first(), message="the task"
    )
    wait_for(
        lambda: run.steps.filter(step_name="slow", status="running").exists(),
        message="slow running",
    )
    approvals.task_rollback(task_id=first.pk, user=users["r1"], to_step="start", comment="redo")
    second = wait_for(
        lambda: HumanTask.objects.filter(run=run, status="open", generation=2).first(),
        message="the second generation's task",
    )
    wait_for(
        lambda: AuditEntry.objects.filter(run=run, event="step.outcome_dropped").exists(),
        message="the first slow attempt's outcome to be dropped",
    )
    approvals.task_approve(task_id=second.pk, user=users["r1"])
    run = wait_finished(run, timeout=30)

    assert run.status == Run.Status.SUCCEEDED
    slow = run.steps.filter(step_name="slow").order_by("generation", "attempt")
    assert [(s.generation, s.status) for s in slow] == [(1, "cancelled"), (2, "succeeded")]
    assert audit_counts(run, "step.outcome_dropped") == {"slow": 1}
    # start ran in both generations; everything after it committed once, in the second.
    assert audit_counts(run, "step.succeeded") == {"start": 2, "slow": 1, "review": 1, "ship": 1}
    assert all(verify_chain(*found) is None for found in chains(run.pk))
