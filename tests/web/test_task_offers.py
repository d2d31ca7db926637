"""The task page offers only what the services would allow, says why otherwise, shows the
quorum so far, and lets the organization's admins reassign."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines.models import AuditEntry
from tests.approvals.conftest import open_task
from tests.web.conftest import waiting_run

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
APPROVE = ">Approve</button>"


def page_of(client, task: HumanTask) -> str:
    response = client.get(reverse("task", args=[task.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_quorum_so_far_is_shown_before_voting(client, users):
    task = open_task(waiting_run(users["starter"], quorum=2))
    client.force_login(users["r2"])
    assert "<strong>0 of 2</strong> approvals so far" in page_of(client, task)
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    page = page_of(client, task)
    assert "<strong>1 of 2</strong> approvals: r1" in page
    assert APPROVE in page
    # The panel's own refresh carries it too.
    panel = client.get(reverse("task", args=[task.pk]), {"part": "panel"}, **HX)
    assert "<strong>1 of 2</strong> approvals: r1" in panel.content.decode()
    # Who voted sees the count and no second Approve.
    client.force_login(users["r1"])
    page = page_of(client, task)
    assert APPROVE not in page
    assert "You approved. Waiting for 2 approvals in all (1 so far)." in page


def test_a_single_approval_shows_no_count(client, users):
    task = open_task(waiting_run(users["starter"]))
    client.force_login(users["r1"])
    assert 'id="task-votes"' not in page_of(client, task)


def test_the_starter_sees_why_instead_of_approve_and_claim(client, users):
    users["starter"].groups.add(*users["r1"].groups.all())
    task = open_task(waiting_run(users["starter"]))
    client.force_login(users["starter"])
    page = page_of(client, task)
    assert APPROVE not in page
    assert ">Claim</button>" not in page
    assert "You started this run, so you may not approve it yourself." in page
    # Rejecting is not moving the run on: still offered.
    assert ">Reject</button>" in page
    # And the service still refuses a forged approval.
    response = client.post(reverse("task-action", args=[task.pk, "approve"]), {}, **HX)
    assert response.status_code == 403
    assert open_task(task.run).pk == task.pk


def test_a_step_that_allows_self_approval_offers_approve_to_the_starter(client, users):
    users["starter"].groups.add(*users["r1"].groups.all())
    task = open_task(waiting_run(users["starter"], allow_self_approval=True))
    client.force_login(users["starter"])
    page = page_of(client, task)
    assert APPROVE in page
    assert ">Claim</button>" in page


def test_a_task_claimed_by_someone_else_says_so(client, users):
    task = open_task(waiting_run(users["starter"]))
    approvals.task_claim(task_id=task.pk, user=users["r2"])
    client.force_login(users["r1"])
    page = page_of(client, task)
    assert APPROVE not in page
    assert f"Task {task.pk} is claimed by r2." in page


# --- reassign from the page -------------------------------------------------------------


def reassigned(task: HumanTask) -> list[Any]:
    return list(
        AuditEntry.objects.filter(run=task.run, event="task.reassigned").values_list(
            "data", flat=True
        )
    )


def test_only_admins_see_the_reassign_form(client, users):
    task = open_task(waiting_run(users["starter"]))
    for name in ("r1", "starter", "outsider"):
        client.force_login(users[name])
        assert 'id="reassign-title"' not in page_of(client, task), name
    client.force_login(users["boss"])
    page = page_of(client, task)
    assert 'id="reassign-title"' in page
    assert '<option value="r2">' in page
    assert '<option value="reviewers">' in page
    assert 'name="csrfmiddlewaretoken"' in page


def test_an_admin_reassigns_from_the_page(client, users):
    task = open_task(waiting_run(users["starter"]))
    client.force_login(users["boss"])
    url = reverse("task-action", args=[task.pk, "reassign"])
    response = client.post(url, {"to": "r3", "to_role": ""}, **HX)
    assert response.status_code == 200
    assert "Reassigned to r3." in response.content.decode()
    task.refresh_from_db()
    assert (task.assignee.username, task.assignee_role) == ("r3", None)
    assert [d["assignee"] for d in reassigned(task)] == ["r3"]

    response = client.post(url, {"to": "ghost"}, **HX)
    assert response.status_code == 400
    assert "No user &#x27;ghost&#x27; in this organization." in response.content.decode()
    response = client.post(url, {"to": "", "to_role": ""}, **HX)
    assert response.status_code == 400
    for bad in ({"to": "r\x002"}, {"to_role": "x" * 151}, {"to": "y" * 5000}):
        response = client.post(url, bad, **HX)
        assert response.status_code == 400, bad
        assert "at most 150 characters, none of them NUL" in response.content.decode()
    task.refresh_from_db()
    assert task.assignee.username == "r3"


@pytest.mark.parametrize("who", ["r1", "starter"])
def test_a_forged_reassign_by_a_member_is_refused_and_audited(client, users, who):
    task = open_task(waiting_run(users["starter"]))
    client.force_login(users[who])
    url = reverse("task-action", args=[task.pk, "reassign"])
    response = client.post(url, {"to": who}, **HX)
    assert response.status_code == 403
    assert "Only the organization&#x27;s admins may reassign" in response.content.decode()
    task.refresh_from_db()
    assert (task.assignee, task.assignee_role.name) == (None, "reviewers")
    assert reassigned(task) == []
    refused = AuditEntry.objects.filter(run=task.run, event="task.refused").values_list(
        "data", flat=True
    )
    assert [d["action"] for d in refused] == ["reassign"]


def test_an_outsider_cannot_find_the_task_to_reassign(client, users):
    task = open_task(waiting_run(users["starter"]))
    client.force_login(users["outsider"])
    url = reverse("task-action", args=[task.pk, "reassign"])
    assert client.post(url, {"to": "outsider"}, **HX).status_code in (403, 404)
    task.refresh_from_db()
    assert task.assignee is None
    assert reassigned(task) == []


def test_break_claim_is_offered_to_the_organizations_admins_not_to_staff(client, users):
    """Staff is a Django admin flag, not a say in this organization: the services let only
    the organization's admins break a claim, and the page offers it to no one else."""
    from orgs.models import Membership

    task = open_task(waiting_run(users["starter"]))
    approvals.task_claim(task_id=task.pk, user=users["r2"])
    users["r1"].is_staff = True
    users["r1"].save(update_fields=["is_staff"])
    client.force_login(users["r1"])
    assert ">Break claim</button>" not in page_of(client, task)
    Membership.objects.filter(user=users["r3"]).update(role=Membership.Role.ADMIN)
    client.force_login(users["r3"])
    assert ">Break claim</button>" in page_of(client, task)
