"""Attack: fork an approved run to get its gated steps run again without a new approval."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines import services
from pipelines.models import AuditEntry, Checkpoint, Run
from tests.api.conftest import error_of
from tests.approvals.conftest import drive
from tests.conftest import wait_finished, wait_for

V1 = "/api/v1"
ONLY_OPERATORS = (
    "Only the run's starter, its pipeline's operators and the organization's admins may"
)


def shipped(run: Run) -> int:
    """How many times `ship` (the gated step) really ran: each run writes its own entry."""
    return AuditEntry.objects.filter(run=run, step_name="ship", event="step.succeeded").count()


def reviewer_starts(users: dict) -> None:
    """The starter is a reviewer too: only separation of duties stands in the way."""
    users["starter"].groups.add(Group.objects.get(name="reviewers"))


def after_review(run: Run) -> int:
    return Checkpoint.objects.get(run=run, step_name="review", status="succeeded").seq


@pytest.mark.worker
def test_a_fork_after_the_approval_asks_for_it_again(worker, users, client_for, gated):
    reviewer_starts(users)
    run = services.run_start(pipeline=gated, inputs={"version": "1.0"}, actor=users["starter"])
    task = wait_for(lambda: HumanTask.objects.filter(run=run, status="open").first())
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    run = wait_finished(run)
    assert (run.status, shipped(run)) == ("succeeded", 1)

    # The starter forks from the checkpoint right after the approval.
    response = client_for(users["starter"]).post(
        f"{V1}/runs/{run.pk}/fork/", {"checkpoint": after_review(run)}, format="json"
    )
    assert response.status_code == 201
    fork = Run.objects.get(pk=response.json()["id"])
    new_task = wait_for(lambda: HumanTask.objects.filter(run=fork, status="open").first())
    assert new_task.step_name == "review"
    fork.refresh_from_db()
    assert fork.status == "waiting"
    assert shipped(fork) == 0  # nothing past the gate ran
    created = AuditEntry.objects.get(run=fork, event="run.created")
    assert created.data["redo"] == ["review", "ship"]
    assert created.data["kept"] == ["build"]

    error = error_of(client_for(users["starter"]).post(f"{V1}/tasks/{new_task.pk}/approve/"), 403)
    assert error["message"] == "You started this run, so you may not approve it yourself."
    assert AuditEntry.objects.filter(run=fork, event="task.refused").count() == 1
    assert shipped(fork) == 0


def test_staff_fork_cannot_be_approved_by_the_original_starter(users, client_for, waiting_run):
    reviewer_starts(users)
    run = waiting_run()
    task = HumanTask.objects.get(run=run, status="open")
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    run.refresh_from_db()
    fork = services.run_fork(run_id=run.pk, checkpoint_seq=after_review(run), actor=users["boss"])
    assert (fork.created_by, fork.forked_from_id) == (users["boss"], run.pk)
    services.run_advance(run_id=fork.pk)
    fork_task = HumanTask.objects.get(run=fork, status="open")

    error = error_of(client_for(users["starter"]).post(f"{V1}/tasks/{fork_task.pk}/approve/"), 403)
    assert error["message"] == (
        "You started a run this one was forked or handed off from, "
        "so you may not approve it yourself."
    )
    refused = AuditEntry.objects.get(run=fork, event="task.refused")
    assert refused.actor == users["starter"]
    assert HumanTask.objects.get(pk=fork_task.pk).status == "open"
    # A fork of the fork still remembers the first starter.
    again = drive(services.run_fork(run_id=fork.pk, checkpoint_seq=1, actor=users["boss"]))
    deep_task = HumanTask.objects.get(run=again, status="open")
    error_of(client_for(users["starter"]).post(f"{V1}/tasks/{deep_task.pk}/claim/"), 403)


@pytest.mark.parametrize("who", ["r1", "outsider"])
def test_only_staff_and_the_starter_may_fork(users, client_for, waiting_run, who):
    run = waiting_run()
    runs_before = Run.objects.count()
    error = error_of(
        client_for(users[who]).post(f"{V1}/runs/{run.pk}/fork/", {"checkpoint": 1}, format="json"),
        403,
    )
    assert error["message"] == f"{ONLY_OPERATORS} fork it."
    page = Client()
    page.force_login(users[who])
    assert page.post(f"/runs/{run.pk}/fork/", {"checkpoint": 1}).status_code == 403
    assert Run.objects.count() == runs_before
    refusals = AuditEntry.objects.filter(run=run, event="run.refused")
    assert [(r.actor_name, r.data["action"]) for r in refusals] == [(who, "fork"), (who, "fork")]


def test_a_fork_before_the_gate_keeps_only_what_came_before(users, waiting_run):
    run = waiting_run()
    build = Checkpoint.objects.get(run=run, step_name="build").seq
    fork = services.run_fork(run_id=run.pk, checkpoint_seq=build, actor=users["starter"])
    created = AuditEntry.objects.get(run=fork, event="run.created")
    assert (created.data["kept"], created.data["redo"]) == (["build"], [])
