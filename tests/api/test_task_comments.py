"""Comments on a task: a thread for those who may open it, @mentions that tell people."""

from __future__ import annotations

import pytest
from django.core import mail
from rest_framework.test import APIClient

from approvals import services as approvals
from approvals.comments import mentioned
from approvals.models import TaskComment
from orgs.models import Membership, Organization
from pipelines.errors import InvalidInput, NotFound
from pipelines.models import AuditEntry
from tests.api.conftest import error_of
from tests.approvals.conftest import open_task
from tokens.services import token_create

pytestmark = pytest.mark.django_db


def test_mentions_tell_who_may_open_the_task(
    users, waiting_run, django_user_model, django_capture_on_commit_callbacks
):
    task = open_task(waiting_run())
    globex = Organization.objects.create(slug="globex", name="Globex")
    stranger = django_user_model.objects.create_user("stranger", email="s@example.com")
    Membership.objects.create(user=stranger, organization=globex)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        comment = approvals.task_comment(
            task_id=task.pk,
            user=users["r1"],
            body="@r2 can you check the notes? cc @stranger, @ghost and me @r1.",
        )
    assert comment.mentions == ["r2"]
    (message,) = mail.outbox
    assert message.to == ["r2@example.com"]
    assert message.subject == f"[Firefly] r1 mentioned you on run {task.run_id}, step review"
    entry = AuditEntry.objects.get(run_id=task.run_id, event="task.commented")
    assert (entry.actor, entry.data["mentions"]) == (users["r1"], ["r2"])


def test_who_may_not_open_the_task_cannot_comment(users, waiting_run, django_user_model):
    task = open_task(waiting_run())
    globex = Organization.objects.create(slug="globex", name="Globex")
    stranger = django_user_model.objects.create_user("stranger")
    Membership.objects.create(user=stranger, organization=globex)
    with pytest.raises(NotFound):
        approvals.task_comment(task_id=task.pk, user=stranger, body="hello")
    with pytest.raises(NotFound):
        approvals.task_comment(task_id=999_999, user=users["r1"], body="hello")
    assert not TaskComment.objects.exists()


@pytest.mark.parametrize(("body", "says"), [("   ", "Write something"), ("x" * 5001, "at most")])
def test_empty_or_long_comments_are_named(users, waiting_run, body, says):
    task = open_task(waiting_run())
    with pytest.raises(InvalidInput, match=says):
        approvals.task_comment(task_id=task.pk, user=users["r1"], body=body)


def test_mentions_are_read_as_people_write_them():
    assert mentioned("@a, @b.c. and mail@example.com @a") == ["a", "b.c"]


def test_the_api_thread(client_for, users, waiting_run):
    task = open_task(waiting_run())
    api = client_for(users["r1"])
    url = f"/api/v1/tasks/{task.pk}/comments/"
    created = api.post(url, {"body": "looks fine @r2"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["mentions"] == ["r2"]
    (only,) = api.get(url).json()
    assert (only["author"], only["body"]) == ("r1", "looks fine @r2")
    error_of(api.post(url, {"body": ""}, format="json"), 400, "invalid")
    globex = Organization.objects.create(slug="globex", name="Globex")
    Membership.objects.create(user=users["outsider"], organization=globex)
    _, key = token_create(user=users["outsider"], organization=globex, name="g")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    error_of(other.get(url), 404)
    error_of(other.post(url, {"body": "hi"}, format="json"), 404)
    assert TaskComment.objects.count() == 1


def test_the_page_thread(client, users, waiting_run):
    task = open_task(waiting_run())
    client.force_login(users["r2"])
    url = f"/tasks/{task.pk}/comments/"
    response = client.post(url, {"body": "first"}, follow=True)
    assert "first" in response.content.decode()
    partial = client.post(url, {"body": "second @r1"}, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial
    assert "second @r1" in partial
    assert "told r1" in partial
    bad = client.post(url, {"body": " "}, HTTP_HX_REQUEST="true")
    assert bad.status_code == 400
    assert "Write something first." in bad.content.decode()


def test_erasing_a_runs_data_empties_its_comments(users, waiting_run):
    from approvals.services import tasks_erase

    task = open_task(waiting_run())
    approvals.task_comment(task_id=task.pk, user=users["r1"], body="secret @r2")
    tasks_erase([task.run_id])
    comment = TaskComment.objects.get()
    assert (comment.body, comment.mentions, comment.author) == ("", [], users["r1"])
