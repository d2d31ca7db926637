"""POST /api/v1/tasks/{id}/reassign/: organization admins only, through the audited service."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from approvals.models import HumanTask
from orgs.models import Membership, Organization
from pipelines.models import AuditEntry
from tests.api.conftest import error_of
from tests.approvals.conftest import open_task
from tokens.services import token_create

pytestmark = pytest.mark.django_db


def url(task: HumanTask) -> str:
    return f"/api/v1/tasks/{task.pk}/reassign/"


def state(task: HumanTask) -> tuple[Any, ...]:
    return tuple(
        HumanTask.objects.filter(pk=task.pk).values_list(
            "assignee_id", "assignee_role_id", "claimed_by_id"
        )[0]
    )


def events(task: HumanTask) -> list[tuple[str, Any]]:
    return list(
        AuditEntry.objects.filter(run=task.run, event__in=["task.reassigned", "task.refused"])
        .order_by("seq")
        .values_list("event", "data")
    )


def test_an_admin_reassigns_to_a_member_then_to_a_role(client_for, users, waiting_run):
    task = open_task(waiting_run())
    api = client_for(users["boss"])
    response = api.post(url(task), {"to": "outsider"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["assignee"], body["role"], body["claimed_by"]) == ("outsider", None, None)
    [(event, data)] = events(task)
    assert event == "task.reassigned"
    assert (data["assignee"], data["role"]) == ("outsider", None)
    # The new assignee may now decide it.
    assert client_for(users["outsider"]).get(f"/api/v1/tasks/{task.pk}/").json()["can_act"]

    Group.objects.create(name="release-managers")
    response = api.post(url(task), {"to_role": "release-managers"}, format="json")
    assert (response.json()["assignee"], response.json()["role"]) == (None, "release-managers")
    both = api.post(url(task), {"to": "r2", "to_role": "reviewers"}, format="json").json()
    assert (both["assignee"], both["role"]) == ("r2", "reviewers")


@pytest.mark.parametrize("who", ["r1", "starter"])
def test_a_member_may_not_reassign(client_for, users, waiting_run, who):
    task = open_task(waiting_run())
    before = state(task)
    # r1 may decide the task and even tries to give it to themself.
    response = client_for(users[who]).post(url(task), {"to": who}, format="json")
    error = error_of(response, 403, "forbidden")
    assert "Only the organization's admins may reassign" in error["message"]
    assert state(task) == before
    [(event, data)] = events(task)
    assert event == "task.refused"
    assert data["action"] == "reassign"


def test_a_non_admin_learns_nothing_of_usernames(client_for, users, waiting_run):
    """A refusal comes before the names are looked at: no telling which users exist."""
    task = open_task(waiting_run())
    api = client_for(users["r1"])
    unknown = api.post(url(task), {"to": "no-such-user"}, format="json")
    known = api.post(url(task), {"to": "boss"}, format="json")
    assert unknown.status_code == known.status_code == 403
    assert unknown.json()["error"]["message"] == known.json()["error"]["message"]


def test_another_organizations_admin_finds_no_task(client_for, users, waiting_run):
    task = open_task(waiting_run())
    globex = Organization.objects.create(slug="globex", name="Globex")
    intruder = type(users["boss"]).objects.create_user("intruder", password="x")
    Membership.objects.create(user=intruder, organization=globex, role="admin")
    before = state(task)
    _, key = token_create(user=intruder, organization=globex, name="intruder")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = api.post(url(task), {"to": "intruder"}, format="json")
    error_of(response, 404)
    assert state(task) == before
    assert events(task) == []


def test_bad_targets_are_named(client_for, users, waiting_run):
    task = open_task(waiting_run())
    api = client_for(users["boss"])
    before = state(task)
    error = error_of(api.post(url(task), {"to": "nobody"}, format="json"), 400, "invalid")
    assert error["message"] == "No user 'nobody' in this organization."
    error = error_of(api.post(url(task), {"to_role": "ghosts"}, format="json"), 400, "invalid")
    assert error["message"] == "No role 'ghosts'."
    assert not Group.objects.filter(name="ghosts").exists()
    error = error_of(api.post(url(task), {}, format="json"), 400, "invalid")
    assert "to" in str(error["details"])
    error_of(api.post(url(task), {"to": "x" * 151}, format="json"), 400, "invalid")
    error_of(api.post(url(task), ["to"], format="json"), 400, "invalid")
    # A user of another organization is as unknown as one that does not exist.
    globex = Organization.objects.create(slug="globex", name="Globex")
    elsewhere = type(users["boss"]).objects.create_user("elsewhere", password="x")
    Membership.objects.create(user=elsewhere, organization=globex, role="member")
    error = error_of(api.post(url(task), {"to": "elsewhere"}, format="json"), 400, "invalid")
    assert error["message"] == "No user 'elsewhere' in this organization."
    assert state(task) == before
    assert events(task) == []


def test_a_decided_task_is_not_reassigned(client_for, users, waiting_run):
    task = open_task(waiting_run())
    client_for(users["r1"]).post(f"/api/v1/tasks/{task.pk}/approve/", {}, format="json")
    response = client_for(users["boss"]).post(url(task), {"to": "r2"}, format="json")
    assert "already decided by r1" in error_of(response, 409)["message"]
