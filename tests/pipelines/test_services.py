"""Services driven directly (no worker): validation, versions, guards and duplicates."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from pipelines import services
from pipelines.errors import Conflict, InvalidInput, NotFound, SpecError
from pipelines.models import AuditEntry, Pipeline, PipelineVersion, Run, StepRun

pytestmark = pytest.mark.django_db

RELEASE = {
    "name": "release",
    "input_schema": {
        "type": "object",
        "required": ["version"],
        "properties": {"version": {"type": "string"}},
    },
    "steps": [
        {"name": "build", "type": "noop"},
        {"name": "ship", "type": "noop", "after": ["build"]},
    ],
}


def test_invalid_spec_names_every_problem_and_writes_nothing():
    spec = {
        "name": "bad",
        "steps": [
            {"name": "a", "type": "noop", "after": ["c"]},
            {"name": "b", "type": "teleport"},
            {"name": "c", "type": "noop", "after": ["a"]},
            {"name": "d", "type": "sleep", "config": {}},
        ],
    }
    with pytest.raises(SpecError) as caught:
        services.pipeline_create(member_role="starter", spec=spec)

    problems = {(e["step"], e["field"]) for e in caught.value.errors}
    assert ("b", "type") in problems
    assert ("d", "config") in problems
    assert any("cycle: " in e["message"] for e in caught.value.errors)
    assert not Pipeline.objects.exists()
    assert not PipelineVersion.objects.exists()
    assert not AuditEntry.objects.exists()


def test_versions_are_immutable_and_runs_keep_theirs():
    first = services.pipeline_create(member_role="starter", spec=RELEASE)
    assert (
        services.pipeline_create(member_role="starter", spec=RELEASE) == first
    )  # same spec, same version
    run = services.run_start(pipeline="release", inputs={"version": "1"})

    changed = {**RELEASE, "description": "now with a description"}
    second = services.pipeline_create(member_role="starter", spec=changed)

    assert (first.number, second.number) == (1, 2)
    run.refresh_from_db()
    assert run.pipeline_version == first
    with pytest.raises(TypeError, match="immutable"):
        first.save()
    with pytest.raises(TypeError, match="immutable"):
        PipelineVersion.objects.filter(pk=first.pk).update(number=9)
    with pytest.raises(TypeError, match="immutable"):
        AuditEntry.objects.all().delete()
    events = AuditEntry.objects.filter(run__isnull=True).values_list("event", "seq")
    assert list(events.order_by("seq")) == [
        ("pipeline.version_created", 1),
        ("pipeline.version_created", 2),
    ]


def test_invalid_inputs_name_the_field_and_create_no_run():
    services.pipeline_create(member_role="starter", spec=RELEASE)
    with pytest.raises(InvalidInput) as caught:
        services.run_start(pipeline="release", inputs={"version": 3})
    assert caught.value.details == [{"field": "version", "message": "3 is not of type 'string'"}]

    with pytest.raises(InvalidInput) as caught:
        services.run_start(pipeline="release", inputs={})
    assert caught.value.details[0]["field"] == "version"
    assert not Run.objects.exists()
    assert not StepRun.objects.exists()


def test_unknown_pipeline_and_run_are_not_found():
    with pytest.raises(NotFound, match="No pipeline 'nope'"):
        services.run_start(pipeline="nope", inputs={})
    with pytest.raises(NotFound, match="No run 12345"):
        services.run_resume(run_id=12345)
    with pytest.raises(NotFound, match="No run 12345"):
        services.run_cancel(run_id=12345)


def test_run_start_queues_the_first_steps_with_its_audit_entries():
    services.pipeline_create(member_role="starter", spec=RELEASE)
    run = services.run_start(pipeline="release", inputs={"version": "1"})

    assert run.status == Run.Status.RUNNING
    assert list(run.steps.order_by("pk").values_list("step_name", "status")) == [
        ("build", "queued"),
        ("ship", "pending"),
    ]
    created, started = AuditEntry.objects.filter(run=run).order_by("seq")
    assert (created.event, created.seq, created.inputs) == ("run.created", 1, {"version": "1"})
    assert created.prev_hash == ""
    assert len(created.hash) == 64
    assert (started.event, started.seq, started.prev_hash) == ("run.started", 2, created.hash)
    assert started.actor_name == "system"  # the engine's doing, not the starter's


def test_executing_the_same_step_twice_commits_it_once():
    services.pipeline_create(
        member_role="starter", spec={"name": "one", "steps": [{"name": "only", "type": "noop"}]}
    )
    run = services.run_start(pipeline="one", inputs={})
    services.run_advance(run_id=run.pk)
    step = run.steps.get()
    assert step.status == "queued"

    services.step_execute(step_run_id=step.pk)
    services.step_execute(step_run_id=step.pk)

    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert AuditEntry.objects.filter(run=run, event="step.succeeded").count() == 1
    assert run.steps.count() == 1


def test_run_state_guards_refuse_with_the_reason():
    services.pipeline_create(
        member_role="starter", spec={"name": "one", "steps": [{"name": "only", "type": "noop"}]}
    )
    run = services.run_start(pipeline="one", inputs={})
    with pytest.raises(Conflict, match="only a failed run can be resumed"):
        services.run_resume(run_id=run.pk)

    services.run_cancel(run_id=run.pk)
    with pytest.raises(Conflict, match="already cancelled"):
        services.run_cancel(run_id=run.pk)
    assert run.steps.get().status == "cancelled"

    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED)
    with pytest.raises(Conflict, match="no checkpoint"):
        services.run_resume(run_id=run.pk)


def test_fork_needs_an_existing_checkpoint():
    services.pipeline_create(
        member_role="starter", spec={"name": "one", "steps": [{"name": "only", "type": "noop"}]}
    )
    run = services.run_start(pipeline="one", inputs={})
    with pytest.raises(NotFound, match="no checkpoint 3"):
        services.run_fork(run_id=run.pk, checkpoint_seq=3)
    assert Run.objects.count() == 1


def test_rollback_only_to_a_completed_step():
    services.pipeline_create(member_role="starter", spec=RELEASE)
    run = services.run_start(pipeline="release", inputs={"version": "1"})
    services.run_advance(run_id=run.pk)
    with pytest.raises(InvalidInput, match="Unknown step 'nope'"):
        services.run_rollback(run_id=run.pk, to_step="nope")
    with pytest.raises(InvalidInput, match="has not completed"):
        services.run_rollback(run_id=run.pk, to_step="build")


def test_load_pipeline_command_reports_the_file_and_loads_nothing_on_error(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nsteps:\n  - {name: a, type: noop}\n")
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"name": "bad", "steps": [{"name": "a", "type": "noop", "after": ["z"]}]})
    )

    with pytest.raises(CommandError) as caught:
        call_command("load_pipeline", str(good), str(bad))
    assert "bad.json" in str(caught.value)
    assert "steps[a].after: unknown step 'z'" in str(caught.value)
    assert not Pipeline.objects.exists()

    out = io.StringIO()
    call_command("load_pipeline", str(good), stdout=out)
    assert "good v1" in out.getvalue()


def test_start_run_and_run_status_commands():
    services.pipeline_create(member_role="starter", spec=RELEASE)
    with pytest.raises(CommandError, match="--inputs is not valid JSON"):
        call_command("start_run", "release", "--inputs", "{nope")
    with pytest.raises(CommandError, match="version"):
        call_command("start_run", "release", "--inputs", "{}")

    out = io.StringIO()
    call_command("start_run", "release", "--inputs", '{"version": "2"}', stdout=out)
    run = Run.objects.get()
    assert f"run {run.pk} started" in out.getvalue()

    out = io.StringIO()
    call_command("run_status", str(run.pk), stdout=out)
    assert "release v1  running" in out.getvalue()
    assert "build" in out.getvalue()
    with pytest.raises(CommandError, match="No run 999999"):
        call_command("run_status", "999999")
