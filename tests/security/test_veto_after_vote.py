"""A reviewer who approved and then vetoes: allowed, audited, never a 500."""

from __future__ import annotations

from django.test import Client

from approvals import services as approvals
from approvals.models import Decision, HumanTask
from pipelines import services
from pipelines.models import AuditEntry, Run
from tests.approvals.conftest import drive

V1 = "/api/v1"


def quorum_of_two(users) -> tuple[Run, HumanTask]:
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "two-keys",
            "steps": [
                {
                    "name": "review",
                    "type": "approval",
                    "config": {"assignee_role": "reviewers", "quorum": 2},
                },
                {"name": "ship", "type": "noop", "after": ["review"]},
            ],
        },
    )
    run = services.run_start(pipeline="two-keys", inputs={}, actor=users["starter"])
    services.run_advance(run_id=run.pk)
    task = HumanTask.objects.get(run=run, status="open")
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    return run, task


def test_reject_after_own_approval_over_the_api(users, client_for):
    run, task = quorum_of_two(users)
    response = client_for(users["r1"]).post(
        f"{V1}/tasks/{task.pk}/reject/", {"comment": "found a problem"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    run.refresh_from_db()
    assert run.status == "rejected"
    vote = Decision.objects.get(task=task, user=users["r1"], action="approve")
    rejected = AuditEntry.objects.get(run=run, event="task.rejected")
    assert rejected.data["withdraws_approval"] == vote.pk
    assert AuditEntry.objects.filter(run=run, step_name="ship", event="step.succeeded").count() == 0


def test_roll_back_after_own_approval_on_the_page(users):
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "redo",
            "steps": [
                {"name": "build", "type": "noop"},
                {
                    "name": "review",
                    "type": "approval",
                    "after": ["build"],
                    "config": {"assignee_role": "reviewers", "quorum": 2},
                },
            ],
        },
    )
    run = services.run_start(pipeline="redo", inputs={}, actor=users["starter"])
    drive(run)
    task = HumanTask.objects.get(run=run, status="open")
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    page = Client()
    page.force_login(users["r1"])
    response = page.post(
        f"/tasks/{task.pk}/rollback/",
        {"to_step": "build", "comment": "rebuild"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert b"Rolled back to build" in response.content
    rolled = AuditEntry.objects.get(run=run, event="task.rolled_back")
    assert rolled.data["withdraws_approval"] is not None
    run.refresh_from_db()
    assert run.generation == 2


def test_approving_twice_is_still_refused(users, client_for):
    _, task = quorum_of_two(users)
    response = client_for(users["r1"]).post(f"{V1}/tasks/{task.pk}/approve/")
    assert response.status_code == 409
    assert Decision.objects.filter(task=task, action="approve").count() == 1
