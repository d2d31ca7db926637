"""The bulk decision form: the checked tasks decided, each refusal listed with its reason."""

from __future__ import annotations

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory

from approvals import services as approvals
from approvals.models import Decision, HumanTask
from pipelines import services
from tests.approvals.conftest import drive, open_task
from tests.web.conftest import waiting_run

pytestmark = pytest.mark.django_db


def runs(users, n: int) -> list[HumanTask]:
    first = open_task(waiting_run(users["starter"]))
    more = [
        open_task(
            drive(
                services.run_start(
                    pipeline="gated", inputs={"version": str(i)}, actor=users["starter"]
                )
            )
        )
        for i in range(n - 1)
    ]
    return [first, *more]


def test_the_checked_tasks_are_approved_and_the_refused_named(client_for, users):
    first, second, decided = runs(users, 3)
    approvals.task_approve(task_id=decided.pk, user=users["r2"])
    own = open_task(
        drive(services.run_start(pipeline="gated", inputs={"version": "x"}, actor=users["r1"]))
    )
    response = client_for(users["r1"]).post(
        "/tasks/bulk/",
        {"action": "approve", "tasks": [first.pk, second.pk, decided.pk, own.pk, "424242"]},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "2 decided, 3 refused." in html
    assert "You started this run, so you may not approve it yourself." in html
    assert f"Task {decided.pk} was already decided by r2" in html
    assert "No task 424242." in html
    assert set(
        Decision.objects.filter(task__in=[first, second]).values_list("user__username", "channel")
    ) == {("r1", "web")}
    assert HumanTask.objects.get(pk=own.pk).status == "open"


def test_reject_without_a_reason_decides_nothing(client_for, users):
    tasks = runs(users, 2)
    response = client_for(users["r1"]).post(
        "/tasks/bulk/", {"action": "reject", "tasks": [t.pk for t in tasks]}
    )
    assert response.status_code == 400
    assert "Say why you reject" in response.content.decode()
    assert not Decision.objects.exists()


def test_nothing_checked_is_named(client_for, users):
    response = client_for(users["r1"]).post("/tasks/bulk/", {"action": "approve"})
    assert response.status_code == 400
    assert "Choose at least one task." in response.content.decode()


def test_a_get_or_an_anonymous_post_decides_nothing(client, users):
    (task,) = runs(users, 1)
    assert client.get("/tasks/bulk/").status_code == 405
    response = client.post("/tasks/bulk/", {"action": "approve", "tasks": [task.pk]})
    assert response.status_code == 302
    assert HumanTask.objects.get(pk=task.pk).status == "open"


def test_the_form_partial_posts_to_the_bulk_view(users):
    request = RequestFactory().get("/")
    request.user = users["r1"]
    html = render_to_string("approvals/partials/bulk_form.html", request=request)
    assert 'id="bulk-decide"' in html
    assert 'action="/tasks/bulk/"' in html
    assert 'name="action" value="approve"' in html
    assert 'name="action" value="reject"' in html
