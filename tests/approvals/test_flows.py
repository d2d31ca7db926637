"""Human gates end to end: a real worker process runs the steps, people decide."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from approvals import services
from approvals.models import Decision, HumanTask
from approvals.services import AlreadyDecided
from orgs.models import Membership, Organization
from pipelines import services as pipelines
from pipelines.errors import InvalidInput
from pipelines.models import AuditEntry, Run
from tests.conftest import wait_finished, wait_for
from tests.races import chain_is_intact, verify_audit

pytestmark = pytest.mark.worker

ECHO = {"callable": "tests.pipelines.callables.echo"}


def task_of(run: Run, step: str) -> HumanTask:
    return wait_for(
        lambda: HumanTask.objects.filter(run=run, step_name=step, status="open").first(),
        message=f"a task for {step}",
    )


def start(users: dict, steps: list[dict], name: str) -> Run:
    pipelines.pipeline_create(member_role="starter", spec={"name": name, "steps": steps})
    return pipelines.run_start(pipeline=name, inputs={"v": 1}, actor=users["starter"])


def test_approve_then_the_run_finishes(worker, users):
    run = start(
        users,
        [
            {"name": "build", "type": "python", "config": ECHO},
            {
                "name": "review",
                "type": "approval",
                "after": ["build"],
                "config": {"assignee_role": "reviewers"},
            },
            {"name": "deploy", "type": "python", "after": ["review"], "config": ECHO},
        ],
        "approve-flow",
    )
    services.task_approve(task_id=task_of(run, "review").pk, user=users["r1"], comment="ship it")
    run = wait_finished(run)
    assert run.status == Run.Status.SUCCEEDED
    upstream = run.steps.get(step_name="deploy").outputs["upstream"]
    assert upstream["review"]["approvers"] == ["r1"]


def test_reject_ends_the_run_rejected(worker, users):
    run = start(
        users,
        [
            {"name": "review", "type": "approval", "config": {"assignee_role": "reviewers"}},
            {"name": "deploy", "type": "noop", "after": ["review"]},
        ],
        "reject-flow",
    )
    services.task_reject(task_id=task_of(run, "review").pk, user=users["r2"], comment="not today")
    run = wait_finished(run)
    assert run.status == Run.Status.REJECTED
    assert run.steps.get(step_name="deploy").status == "pending"


def test_roll_back_two_steps_reruns_them_in_generation_two(worker, users):
    run = start(
        users,
        [
            {"name": "fetch", "type": "python", "config": ECHO},
            {"name": "draft", "type": "python", "after": ["fetch"], "config": ECHO},
            {
                "name": "review",
                "type": "approval",
                "after": ["draft"],
                "config": {"assignee_role": "reviewers"},
            },
            {"name": "publish", "type": "noop", "after": ["review"]},
        ],
        "rollback-flow",
    )
    first = task_of(run, "review")
    services.task_rollback(
        task_id=first.pk, user=users["r1"], to_step="fetch", comment="use fresh data"
    )

    second = wait_for(
        lambda: HumanTask.objects.filter(
            run=run, step_name="review", generation=2, status="open"
        ).first(),
        message="the generation 2 task",
    )
    first.refresh_from_db()
    assert first.status == HumanTask.Status.CANCELLED
    draft = run.steps.get(step_name="draft", generation=2)
    assert draft.outputs["extra"]["rollback"]["comment"] == "use fresh data"
    assert draft.outputs["extra"]["rollback"]["by"] == "r1"
    services.task_approve(task_id=second.pk, user=users["r2"])
    run = wait_finished(run)

    assert run.status == Run.Status.SUCCEEDED
    assert run.generation == 2
    rows = Counter(run.steps.values_list("step_name", "generation"))
    assert rows == {
        ("fetch", 1): 1,
        ("draft", 1): 1,
        ("review", 1): 1,
        ("fetch", 2): 1,
        ("draft", 2): 1,
        ("review", 2): 1,
        ("publish", 1): 1,
        ("publish", 2): 1,
    }
    assert run.steps.get(step_name="review", generation=1).status == "cancelled"
    assert run.steps.get(step_name="publish", generation=1).status == "cancelled"


def test_input_form_errors_then_success(worker, users):
    form = {
        "type": "object",
        "required": ["title", "words"],
        "properties": {
            "title": {"type": "string", "minLength": 3},
            "words": {"type": "integer", "minimum": 1},
        },
    }
    run = start(
        users,
        [
            {"name": "edit", "type": "input", "config": {"assignee": "r1", "form_schema": form}},
            {"name": "publish", "type": "python", "after": ["edit"], "config": ECHO},
        ],
        "input-flow",
    )
    task = task_of(run, "edit")
    with pytest.raises(InvalidInput) as caught:
        services.task_complete(task_id=task.pk, user=users["r1"], data={"title": "ab", "words": 0})
    assert {d["field"] for d in caught.value.details} == {"title", "words"}
    assert not Decision.objects.filter(task=task).exists()

    services.task_complete(task_id=task.pk, user=users["r1"], data={"title": "Hello", "words": 3})
    run = wait_finished(run)
    assert run.status == Run.Status.SUCCEEDED
    published = run.steps.get(step_name="publish").outputs["upstream"]["edit"]
    assert published["data"] == {"title": "Hello", "words": 3}
    assert published["by"] == "r1"


def test_a_choice_takes_one_branch_and_skips_the_other(worker, users):
    run = start(
        users,
        [
            {
                "name": "where",
                "type": "choice",
                "config": {"assignee_role": "reviewers", "options": ["prod", "staging"]},
            },
            {
                "name": "prod",
                "type": "noop",
                "after": ["where"],
                "when": {"step": "where", "path": "choice", "in": ["prod"]},
            },
            {
                "name": "staging",
                "type": "noop",
                "after": ["where"],
                "when": {"step": "where", "path": "choice", "equals": "staging"},
            },
        ],
        "choice-flow",
    )
    task = task_of(run, "where")
    with pytest.raises(InvalidInput, match="not one of the options"):
        services.task_complete(task_id=task.pk, user=users["r3"], choice="moon")
    services.task_complete(task_id=task.pk, user=users["r3"], choice="prod")
    run = wait_finished(run)
    assert dict(run.steps.values_list("step_name", "status")) == {
        "where": "succeeded",
        "prod": "succeeded",
        "staging": "skipped",
    }


def test_pause_from_python_waits_for_an_approval_and_does_not_rerun_the_step(worker, users):
    run = start(
        users,
        [
            {
                "name": "check",
                "type": "python",
                "config": {
                    "callable": "tests.pipelines.callables.pause",
                    "assignee_role": "reviewers",
                },
            },
            {"name": "after", "type": "noop", "after": ["check"]},
        ],
        "pause-flow",
    )
    task = task_of(run, "check")
    assert task.kind == HumanTask.Kind.PAUSE
    assert task.instructions == "numbers look odd"
    services.task_approve(task_id=task.pk, user=users["r1"])
    run = wait_finished(run)
    assert run.status == Run.Status.SUCCEEDED
    assert run.steps.filter(step_name="check").count() == 1
    assert AuditEntry.objects.get(run=run, event="step.waiting").pause_reason == "numbers look odd"


def test_twenty_reviewers_approving_at_once_record_one_approval(worker, users, django_user_model):
    from django.contrib.auth.models import Group

    group = Group.objects.get(name="reviewers")
    crowd = [django_user_model.objects.create_user(f"crowd{i}") for i in range(20)]
    org = Organization.objects.default()
    Membership.objects.bulk_create(Membership(user=u, organization=org) for u in crowd)
    for person in crowd:
        person.groups.add(group)
    run = start(
        users,
        [
            {"name": "review", "type": "approval", "config": {"assignee_role": "reviewers"}},
            {"name": "after", "type": "noop", "after": ["review"]},
        ],
        "race-flow",
    )
    task = task_of(run, "review")
    barrier = threading.Barrier(len(crowd))
    results: dict[str, str] = {}

    def approve(person) -> None:
        try:
            barrier.wait()
            services.task_approve(task_id=task.pk, user=person)
            results[person.username] = "won"
        except AlreadyDecided as exc:
            results[person.username] = str(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(p,)) for p in crowd]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [name for name, result in results.items() if result == "won"]
    assert len(winners) == 1
    losers = [result for result in results.values() if result != "won"]
    assert len(losers) == 19
    assert all(f"already decided by {winners[0]} at" in message for message in losers)
    assert Decision.objects.filter(task=task, action="approve").count() == 1
    assert AuditEntry.objects.filter(run=run, event="task.refused").count() == 19
    assert wait_finished(run).status == Run.Status.SUCCEEDED
    # Twenty writers at once on one chain: every link still verifies, the run's and all.
    assert chain_is_intact(run)
    assert "audit trail intact" in verify_audit()
