"""/api/v1/me/delegation/: read, name and end one's out-of-office delegate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import Decision, Delegation
from pipelines.models import SecurityEvent
from tests.api.conftest import error_of
from tests.approvals.conftest import open_task

pytestmark = pytest.mark.django_db

URL = "/api/v1/me/delegation/"


def test_name_read_and_end_a_delegate(client_for, users, waiting_run):
    api = client_for(users["r1"])
    assert api.get(URL).json() == {"delegation": None, "covering": []}
    until = timezone.now() + timedelta(days=3)
    body = api.post(URL, {"delegate": "outsider", "ends_at": until.isoformat()}, format="json")
    assert body.status_code == 200, body.content
    mine = body.json()["delegation"]
    assert (mine["delegate"], mine["active"]) == ("outsider", True)

    cover = client_for(users["outsider"])
    covering = cover.get(URL).json()["covering"]
    assert [c["user"] for c in covering] == ["r1"]
    # The delegate decides r1's role task through the API, on r1's behalf.
    task = open_task(waiting_run())
    response = cover.post(f"/api/v1/tasks/{task.pk}/approve/", {}, format="json")
    assert response.status_code == 200, response.content
    assert Decision.objects.get(task=task).on_behalf_of == users["r1"]
    (decision,) = cover.get(f"/api/v1/tasks/{task.pk}/").json()["decisions"]
    assert (decision["user"], decision["on_behalf_of"]) == ("outsider", "r1")

    assert api.delete(URL).status_code == 204
    assert api.get(URL).json()["delegation"] is None
    assert cover.get(URL).json()["covering"] == []
    assert SecurityEvent.objects.filter(event="delegation.cleared").count() == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"delegate": "outsider"}, "ends_at"),
        ({"delegate": "outsider", "ends_at": "soon"}, "ends_at"),
        ({"ends_at": "2099-01-01T00:00:00Z"}, "delegate"),
    ],
)
def test_malformed_delegations_are_named(client_for, users, payload, field):
    error = error_of(client_for(users["r1"]).post(URL, payload, format="json"), 400, "invalid")
    assert field in error["details"]


def test_nobody_of_another_organization_and_not_oneself(client_for, users, django_user_model):
    django_user_model.objects.create_user("elsewhere", password="x")
    api = client_for(users["r1"])
    until = (timezone.now() + timedelta(days=1)).isoformat()
    for name, says in (("elsewhere", "not a member"), ("r1", "Name someone else")):
        error = error_of(api.post(URL, {"delegate": name, "ends_at": until}, format="json"), 400)
        assert says in error["message"]
    assert not Delegation.objects.exists()


def test_anonymous_is_refused(client_for):
    error_of(client_for(None).get(URL), 401)
