"""POST /api/v1/tasks/bulk/: many decisions in one request, each decided and audited alone."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from approvals import services as approvals
from approvals.models import Decision, HumanTask
from orgs.models import Membership, Organization
from pipelines import services
from pipelines.models import AuditEntry, Run
from tests.api.conftest import GATED, error_of
from tests.approvals.conftest import drive, open_task
from tokens.services import token_create

pytestmark = pytest.mark.django_db

URL = "/api/v1/tasks/bulk/"


def events(task: HumanTask) -> list[str]:
    return list(
        AuditEntry.objects.filter(run_id=task.run_id, event__startswith="task.")
        .order_by("id")
        .values_list("event", flat=True)
    )


def globex_task(users) -> HumanTask:
    """An open task of another organization, for one of its own reviewers."""
    globex = Organization.objects.create(slug="globex", name="Globex")
    starter = type(users["r1"]).objects.create_user("g-starter", password="x")
    Membership.objects.create(user=starter, organization=globex, role="member")
    services.pipeline_create(spec=GATED, organization=globex, member_role="starter")
    run = services.run_start(
        pipeline="gated", inputs={"version": "9"}, actor=starter, organization=globex
    )
    return open_task(drive(run))


def test_a_mix_of_allowed_and_refused_tasks(client_for, users, waiting_run):
    first, second = open_task(waiting_run()), open_task(waiting_run())
    decided = open_task(waiting_run())
    approvals.task_reject(task_id=decided.pk, user=users["r2"], comment="no")
    own = open_task(
        drive(services.run_start(pipeline="gated", inputs={"version": "2"}, actor=users["r1"]))
    )
    foreign = globex_task(users)
    ids = [first.pk, decided.pk, foreign.pk, own.pk, 999_999, second.pk, first.pk]

    response = client_for(users["r1"]).post(
        URL, {"action": "approve", "tasks": ids, "comment": "batch ok"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["decided"], body["refused"]) == (2, 4)
    by_task = {r["task"]: r for r in body["results"]}
    # In the order given, each id once.
    assert [r["task"] for r in body["results"]] == ids[:-1]
    assert by_task[first.pk]["outcome"] == by_task[second.pk]["outcome"] == "decided"
    assert by_task[first.pk]["status"] == "completed"
    assert by_task[decided.pk]["http_status"] == 409
    assert "already rejected by r2" in by_task[decided.pk]["reason"]
    assert by_task[own.pk]["http_status"] == 403
    assert "You started this run" in by_task[own.pk]["reason"]
    # Another organization's task reads exactly as an id that does not exist.
    for missing in (foreign.pk, 999_999):
        assert by_task[missing] == {
            "task": missing,
            "outcome": "refused",
            "status": "",
            "reason": f"No task {missing}.",
            "code": "not_found",
            "http_status": 404,
        }

    # Each decided on its own, through the API channel, with the one comment.
    for task in (first, second):
        task.refresh_from_db()
        assert task.status == HumanTask.Status.COMPLETED
        decision = Decision.objects.get(task=task)
        assert (decision.user, decision.channel, decision.comment) == (
            users["r1"],
            "api",
            "batch ok",
        )
        assert events(task)[-1] == "task.approved"
        assert Run.objects.get(pk=task.run_id).status != Run.Status.WAITING
    # The refusals changed nothing and are in their runs' audit trail.
    own.refresh_from_db()
    assert own.status == HumanTask.Status.OPEN
    assert events(own)[-1] == "task.refused"
    assert events(decided)[-1] == "task.refused"
    foreign.refresh_from_db()
    assert foreign.status == HumanTask.Status.OPEN
    assert events(foreign) == ["task.opened"]


def test_reject_many_needs_one_reason(client_for, users, waiting_run):
    tasks = [open_task(waiting_run()) for _ in range(3)]
    api = client_for(users["r2"])
    ids = [t.pk for t in tasks]
    error = error_of(api.post(URL, {"action": "reject", "tasks": ids}, format="json"), 400)
    assert "Say why you reject" in error["message"]
    assert all(t.status == "open" for t in HumanTask.objects.filter(pk__in=ids))

    body = api.post(
        URL, {"action": "reject", "tasks": ids, "comment": "wrong release"}, format="json"
    ).json()
    assert body["decided"] == 3
    assert set(HumanTask.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        "rejected"
    }
    assert set(Run.objects.filter(tasks__in=ids).values_list("status", flat=True)) == {"rejected"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"action": "approve", "tasks": list(range(1, 102))}, "tasks"),
        ({"action": "approve", "tasks": []}, "tasks"),
        ({"action": "approve", "tasks": ["one"]}, "tasks"),
        ({"action": "approve", "tasks": [-3]}, "tasks"),
        ({"action": "rollback", "tasks": [1]}, "action"),
        ({"action": "approve", "tasks": 7}, "tasks"),
        ({"tasks": [1]}, "action"),
    ],
)
def test_bad_batches_are_named(client_for, users, payload, field):
    response = client_for(users["r1"]).post(URL, payload, format="json")
    error = error_of(response, 400, "invalid")
    assert field in error["details"], error


def test_the_cap_says_how_many(client_for, users):
    response = client_for(users["r1"]).post(
        URL, {"action": "approve", "tasks": list(range(1, 102))}, format="json"
    )
    error = error_of(response, 400, "invalid")
    assert "100" in str(error["details"]["tasks"])


def test_a_token_of_another_organization_decides_nothing_here(users, waiting_run):
    task = open_task(waiting_run())
    globex = Organization.objects.create(slug="globex", name="Globex")
    # A reviewer of the default organization who also belongs to globex, using a globex
    # token: the batch acts in globex, where this task does not exist.
    Membership.objects.create(user=users["r1"], organization=globex, role="member")
    _, key = token_create(user=users["r1"], organization=globex, name="globex")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    body = api.post(URL, {"action": "approve", "tasks": [task.pk]}, format="json").json()
    assert body["results"][0]["code"] == "not_found"
    task.refresh_from_db()
    assert task.status == "open"


def test_anonymous_is_refused(waiting_run, users):
    task = open_task(waiting_run())
    error_of(APIClient().post(URL, {"action": "approve", "tasks": [task.pk]}, format="json"), 401)
