"""The end of a run: on_finish and its harness, handoffs to other pipelines, unsettled work."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from approvals import services as approvals
from firefly_site.celery import app
from pipelines import services
from pipelines.audit import chains, verify_chain
from pipelines.errors import Conflict, InvalidInput, NotFound, SpecError
from pipelines.models import AuditEntry, HandoffEnvelope, Run, StepRun
from pipelines.services import finishing
from pipelines.spec_text import load_text
from tests.approvals.conftest import drive, open_task
from tests.conftest import wait_finished, wait_for

R = Run.Status
S = StepRun.Status

VALUES = [
    {"name": "a", "type": "python", "config": {"callable": "tests.pipelines.callables.value"}},
    {"name": "b", "type": "python", "config": {"callable": "tests.pipelines.callables.value"}},
]
CHILD = [
    {"name": "double", "type": "python", "config": {"callable": "tests.pipelines.callables.double"}}
]
CHILD_WAITS = [{"name": "check", "type": "approval", "config": {"assignee_role": "reviewers"}}]


def events_of(run: Run) -> list[str]:
    return list(AuditEntry.objects.filter(run=run).order_by("seq").values_list("event", flat=True))


def chain_intact(run: Run) -> bool:
    return all(verify_chain(*found) is None for found in chains(run.pk))


@pytest.fixture(autouse=True)
def on_finish_in_this_thread(request: Any, settings: Any) -> None:
    """In-process tests run on_finish in the test's thread, which holds the test's
    transaction (a timeout runs it in a thread of its own, on another connection).
    Tests on a real worker keep the default timeout."""
    if "worker" not in request.fixturenames:
        settings.FIREFLY_ON_FINISH_TIMEOUT_S = 0


def finish_in_process(run: Run) -> Run:
    """Drive a run's steps here, then run its on_finish here (no broker)."""
    run = drive(run)
    assert run.is_finishing, f"run {run.pk} is {run.status}, not finishing"
    services.run_finalize(run_id=run.pk)
    run.refresh_from_db()
    return run


# --- on_finish ------------------------------------------------------------------------


def test_on_finish_transforms_the_output_on_a_real_worker(worker, make_pipeline):
    name = make_pipeline(VALUES, on_finish="tests.pipelines.callables.total")
    run = wait_finished(services.run_start(pipeline=name, inputs={"value": 4}))

    assert run.status == R.SUCCEEDED
    assert run.output == {"total": 8}
    assert run.disposition == {"status": "succeeded", "unsettled": "no unsettled work"}
    events = events_of(run)
    assert events[-5:] == [
        "run.finishing",
        "run.on_finish_started",
        "lifecycle.summed",
        "run.disposition",
        "run.finished",
    ]
    finished = AuditEntry.objects.get(run=run, event="run.finished")
    assert finished.outputs == {"total": 8}
    assert chain_intact(run)


def test_on_finish_runs_once_when_its_message_is_delivered_again(worker, make_pipeline):
    name = make_pipeline(VALUES, on_finish="tests.pipelines.callables.slow_finalize")
    run = services.run_start(pipeline=name, inputs={})
    wait_for(lambda: Run.objects.filter(pk=run.pk, finish_attempts=1).exists(), message="on_finish")
    for _ in range(3):  # redelivered while the first runs on_finish
        app.send_task("pipelines.tasks.finish_run", args=[run.pk])
    run = wait_finished(run)
    for _ in range(2):  # and again once the run has ended
        app.send_task("pipelines.tasks.finish_run", args=[run.pk])
    services.reap()

    assert run.status == R.SUCCEEDED
    assert run.disposition == {"attempt": 1}
    wait_for(lambda: len(events_of(run)) >= 1)
    events = events_of(run)
    assert events.count("run.on_finish_started") == 1
    assert events.count("lifecycle.settled") == 1
    assert events.count("run.disposition") == 1
    assert events.count("run.finished") == 1


def test_a_retried_on_finish_records_one_disposition(db, make_pipeline):
    name = make_pipeline(VALUES, on_finish="tests.pipelines.callables.slow_finalize")
    run = drive(services.run_start(pipeline=name, inputs={}))
    # Attempt 1 records its disposition, then its worker dies: the lease runs out.
    assert finishing._claim_finish(run.pk) == 1
    run.refresh_from_db()
    services.Harness(run, name, attempt=1).finalize({"attempt": 1})
    Run.objects.filter(pk=run.pk).update(finish_lease_until=timezone.now() - timedelta(seconds=1))

    assert services.reap().finishing == 1
    services.run_finalize(run_id=run.pk)  # what the reaper's message does: attempt 2
    run.refresh_from_db()

    assert run.status == R.SUCCEEDED, run.error
    assert run.finish_attempts == 2
    assert run.disposition == {"attempt": 1}
    assert events_of(run).count("run.disposition") == 1
    assert events_of(run).count("lifecycle.settled") == 1  # attempt 2's
    # The first attempt, had it lived on, can no longer write.
    with pytest.raises(Conflict, match="no longer finishing"):
        services.Harness(run, name, attempt=1).emit_audit("late")


def test_on_finish_raising_fails_the_run_and_keeps_the_steps(db, make_pipeline):
    name = make_pipeline(VALUES, on_finish="tests.pipelines.callables.explode")
    run = finish_in_process(services.run_start(pipeline=name, inputs={"value": 2}))

    assert run.status == R.FAILED
    assert run.error == "on_finish failed: ValueError: the ledger is closed"
    assert run.output == {"a": {"value": 2}, "b": {"value": 2}}
    assert set(StepRun.objects.filter(run=run).values_list("status", flat=True)) == {S.SUCCEEDED}
    failed = AuditEntry.objects.get(run=run, event="run.on_finish_failed")
    assert failed.error_message == "ValueError: the ledger is closed"
    assert events_of(run)[-1] == "run.finished"


def test_on_finish_also_settles_a_failed_run(db, make_pipeline):
    steps = [{"name": "boom", "type": "fail", "config": {"message": "no disk"}}]
    name = make_pipeline(steps, on_finish="tests.pipelines.callables.total")
    run = finish_in_process(services.run_start(pipeline=name, inputs={}))

    assert run.status == R.FAILED
    assert "no disk" in run.error
    assert run.disposition == {"status": "failed", "unsettled": "no unsettled work"}


def test_a_cancelled_run_skips_on_finish_and_cancel_beats_a_running_one(db, make_pipeline):
    name = make_pipeline(VALUES, on_finish="tests.pipelines.callables.total")
    run = drive(services.run_start(pipeline=name, inputs={}))
    assert run.is_finishing
    assert run.status == R.RUNNING
    with pytest.raises(Conflict, match="finishing"):
        services.run_rollback(run_id=run.pk, to_step="a")

    services.run_cancel(run_id=run.pk)
    services.run_finalize(run_id=run.pk)  # the queued finish finds the run closed
    run.refresh_from_db()

    assert run.status == R.CANCELLED
    assert "run.on_finish_started" not in events_of(run)
    assert run.disposition is None


def test_on_finish_must_be_an_allowed_callable(db):
    spec = {
        "name": "bad-finish",
        "steps": [{"name": "a", "type": "noop"}],
        "on_finish": "os.system",
    }
    with pytest.raises(SpecError) as caught:
        services.pipeline_create(member_role="starter", spec=spec)
    assert caught.value.details[0]["field"] == "on_finish"
    assert "outside the allowed modules" in caught.value.details[0]["message"]
    assert not Run.objects.exists()


def test_harness_checks_what_it_is_given(db, make_pipeline):
    name = make_pipeline(VALUES, on_finish="tests.pipelines.callables.total")
    run = drive(services.run_start(pipeline=name, inputs={}))
    attempt = finishing._claim_finish(run.pk)
    assert attempt is not None
    run.refresh_from_db()
    harness = services.Harness(run, name, attempt=attempt)

    with pytest.raises(InvalidInput, match="Audit kind"):
        harness.emit_audit("Not Valid!")
    with pytest.raises(InvalidInput, match="JSON object"):
        harness.finalize(["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no-such-pipeline"):
        harness.handoff_to("no-such-pipeline", {})
    seq = harness.emit_audit("checked", {"ok": True})
    assert AuditEntry.objects.get(run=run, seq=seq).event == "lifecycle.checked"
    assert not HandoffEnvelope.objects.exists()


# --- handoffs -------------------------------------------------------------------------


def test_a_handoff_without_wait_starts_a_linked_child_run(worker, make_pipeline):
    make_pipeline(CHILD, name="lifecycle-child")
    steps = [
        {
            "name": "hand",
            "type": "handoff",
            "config": {"pipeline": "lifecycle-child", "payload": {"value": 5}},
        }
    ]
    parent = wait_finished(services.run_start(pipeline=make_pipeline(steps), inputs={}))
    envelope = HandoffEnvelope.objects.get(origin_run=parent)
    assert envelope.child_run is not None
    child = wait_finished(envelope.child_run)

    assert parent.status == R.SUCCEEDED
    hand = StepRun.objects.get(run=parent, step_name="hand")
    assert hand.outputs == {"envelope": envelope.pk, "run": child.pk, "pipeline": "lifecycle-child"}
    assert child.status == R.SUCCEEDED
    assert child.parent_id == parent.pk
    assert child.inputs == {"value": 5}
    assert child.output == {"double": {"doubled": 10}}
    assert child.trace_id == parent.trace_id
    envelope.refresh_from_db()
    assert (envelope.origin_step, envelope.wait, envelope.status) == ("hand", False, "accepted")
    assert envelope.accepted_at is not None
    queued = AuditEntry.objects.get(run=parent, event="handoff.queued")
    assert queued.data == {
        "envelope": envelope.pk,
        "pipeline": "lifecycle-child",
        "child_run": child.pk,
        "wait": False,
    }
    assert AuditEntry.objects.get(run=child, event="run.created").data["parent_run"] == parent.pk


def test_a_waiting_handoff_ends_as_its_child_did(worker, make_pipeline):
    make_pipeline(CHILD, name="lifecycle-child")
    steps = [
        VALUES[0],
        {
            "name": "hand",
            "type": "handoff",
            "after": ["a"],
            "config": {"pipeline": "lifecycle-child", "payload_from": "a", "wait": True},
        },
        {"name": "after", "type": "noop", "after": ["hand"]},
    ]
    parent = wait_finished(services.run_start(pipeline=make_pipeline(steps), inputs={"value": 7}))

    assert parent.status == R.SUCCEEDED
    hand = StepRun.objects.get(run=parent, step_name="hand")
    assert hand.outputs == {"double": {"doubled": 14}}
    envelope = HandoffEnvelope.objects.get(origin_run=parent)
    assert envelope.status == "acknowledged"
    assert envelope.decision == {"status": "succeeded"}
    events = events_of(parent)
    assert events.index("step.waiting") < events.index("handoff.acknowledged")
    assert events.index("handoff.acknowledged") < events.index("run.finished")
    assert services.unsettled(parent.pk).summary == "no unsettled work"


def test_a_waiting_handoff_fails_when_its_child_fails(worker, make_pipeline):
    make_pipeline([{"name": "boom", "type": "fail", "config": {"message": "quota"}}], name="broken")
    steps = [{"name": "hand", "type": "handoff", "config": {"pipeline": "broken", "wait": True}}]
    parent = wait_finished(services.run_start(pipeline=make_pipeline(steps), inputs={}))

    assert parent.status == R.FAILED
    child = Run.objects.get(parent=parent)
    assert child.status == R.FAILED
    hand = StepRun.objects.get(run=parent, step_name="hand")
    assert hand.status == S.FAILED
    assert hand.error.startswith(f"run {child.pk} of broken failed: step 'boom' failed")


def test_a_handoff_to_a_missing_pipeline_fails_the_step_and_writes_nothing(db, make_pipeline):
    steps = [{"name": "hand", "type": "handoff", "config": {"pipeline": "nowhere"}}]
    run = drive(services.run_start(pipeline=make_pipeline(steps), inputs={}))

    assert run.status == R.FAILED
    assert StepRun.objects.get(run=run).error == "handoff to 'nowhere': No pipeline 'nowhere'."
    assert not HandoffEnvelope.objects.exists()
    assert Run.objects.count() == 1


def test_payload_from_must_be_upstream(db):
    steps = [
        {"name": "a", "type": "noop"},
        {"name": "hand", "type": "handoff", "config": {"pipeline": "x", "payload_from": "a"}},
    ]
    with pytest.raises(SpecError) as caught:
        services.pipeline_create(
            member_role="starter", spec={"name": "bad-handoff", "steps": steps}
        )
    assert caught.value.details == [
        {
            "step": "hand",
            "field": "config.payload_from",
            "message": "'a' is not in the step's `after`",
        }
    ]


def _parent_waiting_on_child(make_pipeline: Any) -> tuple[Run, Run]:
    make_pipeline(CHILD_WAITS, name="lifecycle-child")
    steps = [
        {"name": "prep", "type": "noop"},
        {
            "name": "hand",
            "type": "handoff",
            "after": ["prep"],
            "config": {"pipeline": "lifecycle-child", "wait": True},
        },
    ]
    parent = drive(services.run_start(pipeline=make_pipeline(steps), inputs={}))
    child = drive(Run.objects.get(parent=parent))
    assert parent.status == R.WAITING
    assert child.status == R.WAITING
    return parent, child


def test_rolling_the_parent_back_past_a_waiting_handoff_cancels_the_child(db, make_pipeline, users):
    parent, child = _parent_waiting_on_child(make_pipeline)

    services.run_rollback(run_id=parent.pk, to_step="prep", actor=users["boss"], comment="redo")
    child.refresh_from_db()
    first = HandoffEnvelope.objects.get(child_run=child)

    assert child.status == R.CANCELLED
    assert open_task_count(child) == 0
    assert first.decision == {"status": "cancelled", "reason": "step 'hand' stopped waiting"}
    assert first.acknowledged_by == users["boss"]
    # The new generation hands off again, to a new child.
    parent = drive(parent)
    second = HandoffEnvelope.objects.exclude(pk=first.pk).get(origin_run=parent)
    assert second.child_run_id != child.pk
    assert parent.status == R.WAITING


def test_cancelling_the_parent_cancels_the_child_it_waits_for(db, make_pipeline):
    parent, child = _parent_waiting_on_child(make_pipeline)

    services.run_cancel(run_id=parent.pk)
    child.refresh_from_db()

    assert child.status == R.CANCELLED
    assert "handoff.acknowledged" in events_of(parent)
    # The child's late news changes nothing.
    assert services.handoff_settle(child_run_id=child.pk) is False


def test_a_child_finishing_before_anyone_tells_the_parent_is_found_by_the_reaper(
    db, make_pipeline, users
):
    parent, child = _parent_waiting_on_child(make_pipeline)
    approvals.task_approve(task_id=open_task(child).pk, user=users["r1"])
    child = drive(child)
    assert child.status == R.SUCCEEDED  # its settle message went nowhere (no broker here)

    assert services.reap().settled == 1
    parent.refresh_from_db()
    hand = StepRun.objects.get(run=parent, step_name="hand", status=S.SUCCEEDED)
    assert hand.outputs["check"]["decision"] == "approved"
    assert parent.status == R.SUCCEEDED


def open_task_count(run: Run) -> int:
    return run.tasks.filter(status="open").count()


# --- unsettled work and acknowledgement ---------------------------------------------


def test_unsettled_work_and_acknowledging_a_handoff(db, make_pipeline, users):
    make_pipeline(CHILD, name="lifecycle-child")
    steps = [
        {
            "name": "hand",
            "type": "handoff",
            "config": {"pipeline": "lifecycle-child", "payload": {"value": 1}},
        },
        {
            "name": "review",
            "type": "approval",
            "after": ["hand"],
            "config": {"assignee_role": "reviewers"},
        },
    ]
    run = drive(services.run_start(pipeline=make_pipeline(steps), inputs={}))
    envelope = HandoffEnvelope.objects.get(origin_run=run)
    task = open_task(run)

    found = services.unsettled(run.pk)
    assert found.summary == "1 open task, 1 unacknowledged handoff, 1 step in flight"
    assert found.counts == {
        "unacknowledged_handoffs": 1,
        "steps_in_flight": 1,
        "open_tasks": 1,
        "queued_webhook_deliveries": 0,
        "queued_triggers": 0,
    }
    assert found.items["open_tasks"][0]["id"] == task.pk
    assert found.items["unacknowledged_handoffs"][0]["id"] == envelope.pk

    services.acknowledge_handoff(
        envelope_id=envelope.pk, decision={"accepted": True}, actor=users["boss"]
    )
    assert services.unsettled(run.pk).summary == "1 open task, 1 step in flight"
    entry = AuditEntry.objects.get(run=run, event="handoff.acknowledged")
    assert entry.actor_name == users["boss"].get_username()
    assert entry.data == {
        "envelope": envelope.pk,
        "child_run": envelope.child_run_id,
        "decision": {"accepted": True},
    }
    with pytest.raises(Conflict, match="already acknowledged by boss"):
        services.acknowledge_handoff(envelope_id=envelope.pk, decision="again")
    with pytest.raises(InvalidInput, match="decision"):
        services.acknowledge_handoff(envelope_id=envelope.pk, decision="  ")
    with pytest.raises(NotFound):
        services.acknowledge_handoff(envelope_id=envelope.pk + 100, decision="x")
    assert events_of(run).count("handoff.acknowledged") == 1


def test_on_finish_hands_off_and_sees_it_unsettled(db, make_pipeline):
    make_pipeline(CHILD, name="lifecycle-child")
    name = make_pipeline(VALUES, on_finish="tests.pipelines.callables.hand_over")
    run = finish_in_process(services.run_start(pipeline=name, inputs={}))
    envelope = HandoffEnvelope.objects.get(origin_run=run)

    assert run.status == R.SUCCEEDED
    assert run.output == {"handed": envelope.pk, "child": envelope.child_run_id}
    assert run.disposition == {
        "unsettled": "1 unacknowledged handoff",
        "counts": {
            "unacknowledged_handoffs": 1,
            "steps_in_flight": 0,
            "open_tasks": 0,
            "queued_webhook_deliveries": 0,
            "queued_triggers": 0,
        },
    }
    assert envelope.origin_step == ""
    assert envelope.child_run.parent_id == run.pk
    assert chain_intact(run)


def test_the_rollout_demo_waits_for_its_deploy_run(db, users):
    for name in ("deploy", "rollout"):
        services.pipeline_create(
            member_role="starter", spec=load_text(Path(f"pipelines/demo/{name}.yaml").read_text())
        )
    run = drive(
        services.run_start(pipeline="rollout", inputs={"version": "2.0"}, actor=users["starter"])
    )
    child = drive(Run.objects.get(parent=run))
    assert child.inputs["version"] == "2.0"
    for reviewer in ("r1", "r2"):
        approvals.task_approve(task_id=open_task(child).pk, user=users[reviewer])
    drive(child)
    services.reap()  # stands in for the settle message: the parent's step ends as the child did
    run.refresh_from_db()
    services.run_finalize(run_id=run.pk)
    run.refresh_from_db()

    assert run.status == R.SUCCEEDED
    assert run.output == {"deployed": "2.0"}
    assert run.disposition == {"status": "succeeded", "unsettled": "no unsettled work"}


def test_run_status_shows_handoffs_and_the_disposition(db, make_pipeline):
    make_pipeline(CHILD, name="lifecycle-child")
    name = make_pipeline(VALUES, on_finish="tests.pipelines.callables.hand_over")
    run = drive(services.run_start(pipeline=name, inputs={}))
    out = StringIO()
    call_command("run_status", str(run.pk), stdout=out)
    assert "finishing: on_finish runs (the steps succeeded)" in out.getvalue()

    run = finish_in_process(run)
    envelope = HandoffEnvelope.objects.get(origin_run=run)
    out = StringIO()
    call_command("run_status", str(run.pk), stdout=out)
    text = out.getvalue()
    assert (
        f"handoff {envelope.pk} from on_finish to lifecycle-child: "
        f"run {envelope.child_run_id}, accepted" in text  # the child started as it was made
    )
    assert "disposition: {" in text
    assert '"unsettled": "1 unacknowledged handoff"' in text
    out = StringIO()
    call_command("run_status", str(envelope.child_run_id), stdout=out)
    assert f"handed off by run {run.pk}" in out.getvalue()


def test_a_run_failed_by_on_finish_resumes_into_on_finish_again(db, make_pipeline):
    name = make_pipeline(VALUES, on_finish="tests.pipelines.callables.fails_once")
    run = finish_in_process(services.run_start(pipeline=name, inputs={}))
    assert run.status == R.FAILED
    assert run.error == "on_finish failed: RuntimeError: the archive is down"

    services.run_resume(run_id=run.pk)
    run = finish_in_process(run)

    assert run.status == R.SUCCEEDED
    assert run.output == {"archived": True}
    assert run.finish_attempts == 1
    assert events_of(run).count("run.on_finish_started") == 2
    # The steps kept their work: each ran once.
    assert StepRun.objects.filter(run=run).count() == 2
