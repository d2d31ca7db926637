"""Event hooks: one after-commit stream for step, run and task events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from approvals import services as approvals
from orgs.models import Organization
from pipelines import events, services
from pipelines.models import Run, StepRun
from tests.approvals.conftest import drive, open_task

pytestmark = pytest.mark.django_db

TWO_STEPS = [{"name": "a", "type": "noop"}, {"name": "b", "type": "noop", "after": ["a"]}]


@pytest.fixture
def heard() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    got: list[tuple[str, dict[str, Any]]] = []
    hook = events.register(lambda event, payload: got.append((event, payload)))
    yield got
    events.unregister(hook)


def test_hooks_hear_step_and_run_events_after_commit(heard, django_capture_on_commit_callbacks):
    services.pipeline_create(member_role="starter", spec={"name": "heard", "steps": TWO_STEPS})
    with django_capture_on_commit_callbacks(execute=True):
        run = drive(services.run_start(pipeline="heard", inputs={}))

    assert run.status == Run.Status.SUCCEEDED
    assert [(event, payload.get("step")) for event, payload in heard] == [
        ("step.started", "a"),
        ("step.succeeded", "a"),
        ("step.started", "b"),
        ("step.succeeded", "b"),
        ("run.finished", None),
    ]
    assert all(payload["run"] == run.pk and payload["pipeline"] == "heard" for _, payload in heard)
    assert heard[-1][1]["status"] == "succeeded"


def test_a_hook_for_one_pipeline_and_some_events(django_capture_on_commit_callbacks):
    got: list[str] = []
    hook = events.register(
        lambda event, payload: got.append(f"{payload['pipeline']}:{event}"),
        events=["run.finished"],
        pipeline="mine",
    )
    try:
        for name in ("mine", "theirs"):
            services.pipeline_create(member_role="starter", spec={"name": name, "steps": TWO_STEPS})
            with django_capture_on_commit_callbacks(execute=True):
                drive(services.run_start(pipeline=name, inputs={}))
    finally:
        events.unregister(hook)
    assert got == ["mine:run.finished"]


def test_a_failing_hook_is_logged_and_changes_nothing(
    heard, caplog, django_capture_on_commit_callbacks
):
    def broken(event: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("hook on fire")

    hook = events.register(broken, events=["step.succeeded"])
    try:
        services.pipeline_create(member_role="starter", spec={"name": "sturdy", "steps": TWO_STEPS})
        with django_capture_on_commit_callbacks(execute=True):
            run = drive(services.run_start(pipeline="sturdy", inputs={}))
    finally:
        events.unregister(hook)
    assert run.status == Run.Status.SUCCEEDED
    assert "hook on fire" in caplog.text
    assert ("run.finished", heard[-1][1]) == heard[-1]


def test_nothing_is_heard_when_the_transaction_rolls_back(
    heard, django_capture_on_commit_callbacks
):
    services.pipeline_create(member_role="starter", spec={"name": "undone", "steps": TWO_STEPS})
    run = services.run_start(pipeline="undone", inputs={})

    def cancel_then_fail() -> None:
        with transaction.atomic():
            services.run_cancel(run_id=run.pk)
            raise RuntimeError("changed my mind")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        cancel_then_fail()
    assert heard == []


def test_task_events_come_through_the_same_stream(heard, users, django_capture_on_commit_callbacks):
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "gated-events",
            "steps": [
                {"name": "review", "type": "approval", "config": {"assignee_role": "reviewers"}}
            ],
        },
    )
    with django_capture_on_commit_callbacks(execute=True):
        run = drive(services.run_start(pipeline="gated-events", inputs={}, actor=users["starter"]))
        approvals.task_approve(task_id=open_task(run).pk, user=users["r1"])
    names = [event for event, _ in heard]
    assert names[:2] == ["task.opened", "step.waiting"] or names[:2] == [
        "step.waiting",
        "task.opened",
    ]
    decided = next(payload for event, payload in heard if event == "task.decided")
    assert (decided["decided_by"], decided["pipeline"], decided["status"]) == (
        "r1",
        "gated-events",
        "completed",
    )


def test_unknown_events_are_refused():
    with pytest.raises(ValueError, match="unknown events"):
        events.register(lambda event, payload: None, events=["step.exploded"])


def test_a_lost_worker_is_heard_as_a_failed_step(heard, django_capture_on_commit_callbacks):
    services.pipeline_create(
        member_role="starter", spec={"name": "lost", "steps": [{"name": "s", "type": "noop"}]}
    )
    run = services.run_start(pipeline="lost", inputs={})
    services.run_advance(run_id=run.pk)
    step = run.steps.get()
    services.step_begin(step_run_id=step.pk)
    StepRun.objects.filter(pk=step.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    heard.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.reap().lost == 1

    [payload] = [p for e, p in heard if e == "step.failed"]
    assert (payload["step"], payload["run"], payload["lost"]) == ("s", run.pk, True)
    assert "worker lost" in payload["error"]
    assert payload["organization"] == Organization.objects.default().slug
