"""Deciding from an email: signed single-use links, a confirmation page, the same guards."""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from approvals import email_links, services
from approvals.models import Decision, EmailLinkUse, HumanTask
from pipelines import services as pipelines
from pipelines.models import AuditEntry, Run, SecurityEvent
from tests.approvals.conftest import drive, open_task
from tests.approvals.test_services import waiting_run

pytestmark = pytest.mark.django_db

LINK = re.compile(r"(Approve|Reject|Choose \w+): https?://[^/\s]+(/email/[^/\s]+/)")


def links_in(message: Any) -> dict[str, str]:
    """The action links of a plain-text message, by label, as paths for the test client."""
    return dict(LINK.findall(message.body))


def mailed_run(users: dict[str, Any], capture: Any, **config: Any) -> tuple[Run, HumanTask]:
    with capture(execute=True):
        run = waiting_run(users, **config)
    return run, open_task(run)


def message_to(address: str) -> Any:
    (message,) = [m for m in mail.outbox if m.to == [address]]
    return message


@pytest.fixture
def actions_on(settings: Any) -> None:
    settings.FIREFLY_EMAIL_ACTIONS = True


def test_each_reviewer_gets_a_message_with_links_signed_for_them_alone(
    users, django_capture_on_commit_callbacks
):
    _, task = mailed_run(users, django_capture_on_commit_callbacks)
    r1, r2 = message_to("r1@example.com"), message_to("r2@example.com")
    assert set(links_in(r1)) == {"Approve", "Reject"}
    assert links_in(r1)["Approve"] != links_in(r2)["Approve"]
    (html, kind) = r1.alternatives[0]
    assert kind == "text/html"
    assert f'href="http://127.0.0.1:8000{links_in(r1)["Approve"]}"' in html
    assert "Check the build." in html
    assert f"/tasks/{task.pk}/" in html
    link = email_links.read(links_in(r1)["Approve"].split("/")[2])
    assert (link.task_id, link.action, link.user_id) == (task.pk, "approve", users["r1"].pk)


def test_opening_a_link_decides_nothing_and_its_button_decides_once(
    users, client, actions_on, django_capture_on_commit_callbacks
):
    run, task = mailed_run(users, django_capture_on_commit_callbacks)
    approve = links_in(message_to("r1@example.com"))["Approve"]

    page = client.get(approve)  # what a mail scanner does
    assert page.status_code == 200
    assert b"Approve: review" in page.content
    assert b"&quot;v&quot;: 1" in page.content
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN

    done = client.post(approve, {"comment": "from my phone"})
    assert done.status_code == 200, done.content
    task.refresh_from_db()
    assert (task.status, task.decided_by) == (HumanTask.Status.COMPLETED, users["r1"])
    decision = Decision.objects.get(task=task)
    assert (decision.channel, decision.comment) == ("email", "from my phone")
    entry = AuditEntry.objects.get(run=run, event="task.approved")
    assert (entry.actor_name, entry.data["channel"]) == ("r1", "email")
    assert drive(run).status == Run.Status.SUCCEEDED

    again = client.post(approve, {"comment": "twice"})
    assert again.status_code == 409
    assert b"already used" in again.content
    assert Decision.objects.filter(task=task).count() == 1
    refused = SecurityEvent.objects.get(event="email.link_refused")
    assert refused.data["task"] == task.pk
    assert "already used" in refused.reason


def test_an_expired_link_is_refused_and_decides_nothing(users, client, actions_on):
    run = waiting_run(users)
    task = open_task(run)
    token = email_links.token_for(
        task, users["r1"], "approve", expires_at=timezone.now() - timedelta(minutes=1)
    )
    for answer in (client.get(f"/email/{token}/"), client.post(f"/email/{token}/")):
        assert answer.status_code == 410
        assert b"expired" in answer.content
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    assert SecurityEvent.objects.filter(event="email.link_refused").count() == 2


def test_a_forged_or_altered_link_is_refused(users, client, actions_on):
    run = waiting_run(users)
    task = open_task(run)
    token = email_links.token_for(task, users["r1"], "approve")
    # Another recipient's id in a link signed for r1: the signature no longer matches.
    payload, rest = token.split(":", 1)
    for forged in (payload[:-2] + "xx:" + rest, token[:-3], "approve-everything"):
        answer = client.post(f"/email/{forged}/")
        assert answer.status_code == 404, forged
        assert b"not one Firefly signed" in answer.content
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    assert not EmailLinkUse.objects.exists()


def test_a_forwarded_link_opened_by_someone_signed_in_is_refused(
    users, client, actions_on, django_capture_on_commit_callbacks
):
    _, task = mailed_run(users, django_capture_on_commit_callbacks)
    approve = links_in(message_to("r1@example.com"))["Approve"]
    client.force_login(users["r2"])
    for answer in (client.get(approve), client.post(approve)):
        assert answer.status_code == 403
        assert b"sent to someone else" in answer.content
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    assert SecurityEvent.objects.filter(event="email.link_refused", actor=users["r2"]).count() == 2


def test_without_email_actions_a_link_needs_its_recipient_signed_in(
    users, client, django_capture_on_commit_callbacks
):
    _, task = mailed_run(users, django_capture_on_commit_callbacks)
    approve = links_in(message_to("r1@example.com"))["Approve"]
    answer = client.post(approve)
    assert answer.status_code == 302
    assert answer["Location"].startswith("/login/?next=/email/")
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN

    client.force_login(users["r1"])
    assert client.post(approve).status_code == 200
    task.refresh_from_db()
    assert task.status == HumanTask.Status.COMPLETED


def test_a_late_click_says_who_decided_and_when(
    users, client, actions_on, django_capture_on_commit_callbacks
):
    _, task = mailed_run(users, django_capture_on_commit_callbacks)
    approve = links_in(message_to("r1@example.com"))["Approve"]
    services.task_approve(task_id=task.pk, user=users["r2"])

    page = client.get(approve)
    assert page.status_code == 200
    assert b"already decided by r2 at" in page.content
    assert b'type="submit"' not in page.content

    late = client.post(approve)
    assert late.status_code == 409
    assert b"already decided by r2 at" in late.content
    assert list(Decision.objects.filter(task=task).values_list("user__username", flat=True)) == [
        "r2"
    ]


def test_the_runs_starter_may_not_approve_it_from_an_email(
    users, client, actions_on, django_capture_on_commit_callbacks
):
    users["starter"].groups.add(users["r1"].groups.get())
    run, task = mailed_run(users, django_capture_on_commit_callbacks)
    approve = links_in(message_to("starter@example.com"))["Approve"]
    page = client.get(approve)
    assert b"You started this run" in page.content
    assert b'type="submit"' not in page.content
    answer = client.post(approve)
    assert answer.status_code == 403
    assert b"You started this run" in answer.content
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    refused = AuditEntry.objects.get(run=run, event="task.refused")
    assert refused.actor_name == "starter"


def test_a_reject_link_needs_a_reason_and_is_not_spent_without_one(
    users, client, actions_on, django_capture_on_commit_callbacks
):
    _run, task = mailed_run(users, django_capture_on_commit_callbacks)
    reject = links_in(message_to("r3@example.com"))["Reject"]
    empty = client.post(reject, {"comment": "  "})
    assert empty.status_code == 400
    assert b"Say why you reject." in empty.content
    assert not EmailLinkUse.objects.exists()
    assert client.post(reject, {"comment": "wrong version"}).status_code == 200
    task.refresh_from_db()
    assert (task.status, task.decided_by) == (HumanTask.Status.REJECTED, users["r3"])
    assert Decision.objects.get(task=task).channel == "email"


def test_a_choice_task_mails_one_link_per_option(
    users, client, actions_on, django_capture_on_commit_callbacks
):
    pipelines.pipeline_create(
        member_role="starter",
        spec={
            "name": "route",
            "steps": [
                {
                    "name": "pick",
                    "type": "choice",
                    "config": {"assignee": "r1", "options": ["fast", "safe"]},
                },
            ],
        },
    )
    with django_capture_on_commit_callbacks(execute=True):
        run = drive(pipelines.run_start(pipeline="route", inputs={}, actor=users["starter"]))
    links = links_in(message_to("r1@example.com"))
    assert set(links) == {"Choose fast", "Choose safe"}
    assert client.post(links["Choose safe"]).status_code == 200
    assert drive(run).steps.get(step_name="pick").outputs["choice"] == "safe"


def test_mail_goes_out_through_a_real_smtp_server_and_its_link_decides(
    users, client, settings, actions_on, smtp_server, django_capture_on_commit_callbacks
):
    port, received = smtp_server
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    _, task = mailed_run(users, django_capture_on_commit_callbacks)
    assert len(received) == 3
    parsed = [message_from_bytes(raw) for raw in received]
    (for_r1,) = [m for m in parsed if m["To"] == "r1@example.com"]
    assert for_r1.is_multipart()
    text = next(
        part.get_payload(decode=True).decode()
        for part in for_r1.walk()
        if part.get_content_type() == "text/plain"
    )
    approve = dict(LINK.findall(text))["Approve"]
    assert client.post(approve).status_code == 200
    task.refresh_from_db()
    assert (task.status, task.decided_by) == (HumanTask.Status.COMPLETED, users["r1"])
