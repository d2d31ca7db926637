"""Contract tests for /api/v1/tasks/: listing, reading and deciding human tasks."""

from __future__ import annotations

import pytest

from approvals.models import HumanTask
from pipelines import services
from pipelines.models import Run
from tests.api.conftest import error_of
from tests.approvals.conftest import drive, open_task

pytestmark = pytest.mark.django_db

V1 = "/api/v1"


def task_url(task: HumanTask, action: str = "") -> str:
    return f"{V1}/tasks/{task.pk}/" + (f"{action}/" if action else "")


def one_step_run(users, name: str, step: dict) -> Run:
    services.pipeline_create(member_role="starter", spec={"name": name, "steps": [step]})
    run = drive(services.run_start(pipeline=name, inputs={}, actor=users["starter"]))
    assert run.status == Run.Status.WAITING
    return run


# --- reading ------------------------------------------------------------------------------


def test_list_tasks_with_filters_and_pagination(client_for, users, waiting_run):
    first, second = waiting_run(), waiting_run()
    api = client_for(users["r1"])
    body = api.get(f"{V1}/tasks/").json()
    assert body["count"] == 2
    assert [t["run"] for t in body["results"]] == [second.pk, first.pk]  # newest first
    task = body["results"][0]
    assert task["kind"] == "approval"
    assert (task["role"], task["assignee"], task["status"]) == ("reviewers", None, "open")
    assert task["pipeline"] == "gated"

    page = api.get(f"{V1}/tasks/", {"page_size": 1}).json()
    assert (page["count"], len(page["results"])) == (2, 1)
    assert page["next"]

    ids = lambda client, **q: [t["run"] for t in client.get(f"{V1}/tasks/", q).json()["results"]]  # noqa: E731
    assert ids(api, run=first.pk) == [first.pk]
    assert ids(api, mine="true") == [second.pk, first.pk]
    assert ids(client_for(users["outsider"]), mine="true") == []
    assert ids(client_for(users["outsider"])) == [second.pk, first.pk]  # anyone may read
    HumanTask.objects.filter(run=first).update(status=HumanTask.Status.EXPIRED)  # setup only
    assert ids(api, status="open") == [second.pk]
    assert ids(api, status="expired") == [first.pk]
    error = error_of(api.get(f"{V1}/tasks/", {"status": "nope"}), 400, "invalid")
    assert "status" in error["details"]


def test_mine_for_a_superuser_is_every_task(client_for, superuser, users, waiting_run):
    run = waiting_run()
    body = client_for(superuser).get(f"{V1}/tasks/", {"mine": "true"}).json()
    assert [t["run"] for t in body["results"]] == [run.pk]


def test_a_task_with_its_context(client_for, users, waiting_run):
    task = open_task(waiting_run())
    body = client_for(users["r1"]).get(task_url(task)).json()
    assert body["context"] == {"inputs": {"version": "1.0"}, "upstream": {"build": {}}}
    assert body["can_act"] is True
    assert body["rollback_targets"] == ["build"]
    assert body["decisions"] == []
    assert client_for(users["outsider"]).get(task_url(task)).json()["can_act"] is False
    error_of(client_for(users["r1"]).get(f"{V1}/tasks/999999/"), 404, "not_found")


# --- approving and who may ------------------------------------------------------------------


def test_a_reviewer_approves_and_the_run_moves_on(client_for, users, waiting_run):
    run = waiting_run()
    task = open_task(run)
    response = client_for(users["r1"]).post(
        task_url(task, "approve"), {"comment": "ship it"}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["decided_by"]) == ("completed", "r1")
    assert [(d["user"], d["action"], d["comment"]) for d in body["decisions"]] == [
        ("r1", "approve", "ship it")
    ]
    assert drive(run).status == Run.Status.SUCCEEDED


def test_a_decision_records_the_channel_it_came_through(client, client_for, users, waiting_run):
    """The API and the page each say where a decision was made: in the decision, its audit
    entry and the event other systems receive."""
    from approvals.models import Decision
    from pipelines.models import AuditEntry, OutboxEvent

    by_api, by_page = open_task(waiting_run()), open_task(waiting_run())
    response = client_for(users["r1"]).post(task_url(by_api, "approve"), {}, format="json")
    assert response.status_code == 200
    assert [d["channel"] for d in response.json()["decisions"]] == ["api"]
    client.force_login(users["r1"])
    assert client.post(f"/tasks/{by_page.pk}/reject/", {"comment": "no"}).status_code in (
        200,
        302,
    )
    for task, event, channel in (
        (by_api, "task.approved", "api"),
        (by_page, "task.rejected", "web"),
    ):
        assert Decision.objects.get(task=task).channel == channel
        entry = AuditEntry.objects.get(run=task.run, event=event)
        assert entry.data["channel"] == channel
        decided = OutboxEvent.objects.filter(event="task.decided", payload__id=task.pk).get()
        assert decided.payload["channel"] == channel


def test_a_reviewer_outside_the_role_gets_403_with_the_reason(client_for, users, waiting_run):
    task = open_task(waiting_run())
    error = error_of(
        client_for(users["outsider"]).post(task_url(task, "approve"), {}, format="json"),
        403,
        "forbidden",
    )
    assert "role reviewers" in error["message"]


def test_the_runs_starter_may_not_approve_it(client_for, users, waiting_run):
    users["starter"].groups.add(*users["r1"].groups.all())
    task = open_task(waiting_run())
    error = error_of(
        client_for(users["starter"]).post(task_url(task, "approve"), {}, format="json"), 403
    )
    assert "You started this run" in error["message"]


def test_a_superuser_may_approve(client_for, superuser, waiting_run):
    task = open_task(waiting_run())
    response = client_for(superuser).post(task_url(task, "approve"), format="json")
    assert response.status_code == 200
    assert response.json()["decided_by"] == "root"


def test_deciding_a_closed_task_is_409_naming_the_winner(client_for, users, waiting_run):
    task = open_task(waiting_run())
    assert client_for(users["r1"]).post(task_url(task, "approve")).status_code == 200
    error = error_of(
        client_for(users["r2"]).post(
            task_url(task, "reject"), {"comment": "too late"}, format="json"
        ),
        409,
        "already_decided",
    )
    assert "already decided by r1 at" in error["message"]
    error_of(client_for(users["r2"]).post(task_url(task, "approve")), 409, "already_decided")


# --- reject, roll back, complete ----------------------------------------------------------


def test_reject_needs_a_comment_and_ends_the_run(client_for, users, waiting_run):
    run = waiting_run()
    task = open_task(run)
    api = client_for(users["r2"])
    error = error_of(api.post(task_url(task, "reject"), {"comment": " "}, format="json"), 400)
    assert error["details"] == [{"field": "comment", "message": "required"}]
    error = error_of(api.post(task_url(task, "reject"), {}, format="json"), 400, "invalid")
    assert "comment" in error["details"]
    response = api.post(task_url(task, "reject"), {"comment": "not today"}, format="json")
    assert response.json()["status"] == "rejected"
    run.refresh_from_db()
    assert run.status == Run.Status.REJECTED


def test_rollback_to_an_unknown_step_is_400_and_to_build_reruns(client_for, users, waiting_run):
    run = waiting_run()
    task = open_task(run)
    api = client_for(users["r1"])
    error = error_of(
        api.post(task_url(task, "rollback"), {"to_step": "nowhere"}, format="json"), 400
    )
    assert error["details"][0]["field"] == "to_step"
    error = error_of(api.post(task_url(task, "rollback"), {}, format="json"), 400)
    assert "to_step" in error["details"]
    response = api.post(
        task_url(task, "rollback"), {"to_step": "build", "comment": "again"}, format="json"
    )
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    run.refresh_from_db()
    assert run.generation == 2


def test_complete_an_input_task_validates_its_form(client_for, users):
    form = {
        "type": "object",
        "required": ["size"],
        "properties": {"size": {"type": "integer", "minimum": 1}},
    }
    run = one_step_run(
        users,
        "form",
        {
            "name": "ask",
            "type": "input",
            "config": {"assignee_role": "reviewers", "form_schema": form},
        },
    )
    task = open_task(run)
    api = client_for(users["r1"])
    error = error_of(
        api.post(task_url(task, "complete"), {"data": {"size": 0}}, format="json"), 400
    )
    assert error["details"][0]["field"] == "size"
    error = error_of(api.post(task_url(task, "complete"), {"data": {}}, format="json"), 400)
    assert error["details"] == [{"field": "size", "message": "'size' is a required property"}]
    error_of(api.post(task_url(task, "complete"), {}, format="json"), 400)
    response = api.post(task_url(task, "complete"), {"data": {"size": 3}}, format="json")
    assert response.status_code == 200
    assert response.json()["decisions"][0]["data"]["data"] == {"size": 3}


def test_complete_a_choice_task(client_for, users):
    run = one_step_run(
        users,
        "pick",
        {
            "name": "which",
            "type": "choice",
            "config": {"assignee_role": "reviewers", "options": ["a", "b"]},
        },
    )
    task = open_task(run)
    api = client_for(users["r1"])
    error = error_of(api.post(task_url(task, "complete"), {"choice": "z"}, format="json"), 400)
    assert error["details"][0]["field"] == "choice"
    error_of(api.post(task_url(task, "approve"), format="json"), 400, "invalid")
    response = api.post(task_url(task, "complete"), {"choice": "b"}, format="json")
    assert response.json()["decisions"][0]["data"]["choice"] == "b"


# --- claiming -----------------------------------------------------------------------------


def test_claim_and_unclaim(client_for, users, waiting_run):
    task = open_task(waiting_run())
    r1, r2 = client_for(users["r1"]), client_for(users["r2"])
    response = r1.post(task_url(task, "claim"))
    assert (response.status_code, response.json()["claimed_by"]) == (200, "r1")
    error = error_of(r2.post(task_url(task, "approve")), 403, "forbidden")
    assert "claimed by r1" in error["message"]
    error_of(client_for(users["outsider"]).post(task_url(task, "claim")), 403)
    assert r1.post(task_url(task, "unclaim")).json()["claimed_by"] is None
    error = error_of(r1.post(task_url(task, "unclaim")), 409, "conflict")
    assert "not claimed" in error["message"]
    error_of(r1.post(f"{V1}/tasks/999999/claim/"), 404, "not_found")
