"""Deciding from Slack: a message per task, signed clicks, the same guards, the message updated."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from approvals import services
from approvals.models import Decision, HumanTask
from chat import signing
from chat.models import ChatIdentity, ChatMessage
from orgs import rls
from orgs.models import Membership, Organization
from pipelines.models import AuditEntry, Run, SecurityEvent
from tests.approvals.conftest import drive, open_task
from tests.approvals.test_services import waiting_run
from tests.chat.conftest import (
    CHANNEL,
    INTERACTIONS,
    SECRET,
    TOKEN,
    FakeSlack,
    click,
    form,
    send,
    signed,
    submission,
)

pytestmark = pytest.mark.django_db


def posted_run(users: dict[str, Any], capture: Any, **config: Any) -> tuple[Run, HumanTask]:
    with capture(execute=True):
        run = waiting_run(users, **config)
    return run, open_task(run)


def clicks(slack: FakeSlack, label: str, slack_user: str, where: str = CHANNEL) -> dict[str, Any]:
    """What Slack sends when `slack_user` clicks `label` on the (one) message posted to
    `where` (a channel, or a Slack user id for their direct messages)."""
    (posted,) = [p for p in slack.of("chat.postMessage") if p["channel"] == where]
    (message,) = ChatMessage.objects.filter(channel__in=[where, "D" + where[1:]])
    return click(posted, label, slack_user, channel=message.channel, ts=message.ts)


def told(slack: FakeSlack, slack_user: str) -> list[str]:
    return [c["text"] for c in slack.of("chat.postEphemeral") if c["user"] == slack_user]


def refusals() -> list[SecurityEvent]:
    return list(SecurityEvent.objects.filter(event="chat.refused").order_by("pk"))


def test_an_opened_task_posts_its_summary_with_approve_and_reject(
    users, slack, django_capture_on_commit_callbacks
):
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    (call,) = [c for c in slack.calls if c["method"] == "chat.postMessage"]
    assert call["authorization"] == f"Bearer {TOKEN}"
    posted = call["args"]
    assert posted["channel"] == CHANNEL
    assert "review" in posted["text"]
    (actions,) = [b for b in posted["blocks"] if b["type"] == "actions"]
    buttons = {e["text"]["text"]: (e["action_id"], e["value"]) for e in actions["elements"]}
    # The task and the action, nothing else: the click is authenticated by its signature.
    assert buttons == {
        "Approve": (f"approve:{task.pk}", str(task.pk)),
        "Reject": (f"reject:{task.pk}", str(task.pk)),
    }
    shown = str(posted["blocks"])
    assert "Check the build." in shown
    assert f"/tasks/{task.pk}/" in shown
    message = ChatMessage.objects.get(task=task)
    assert (message.channel, message.organization_id) == (CHANNEL, task.organization_id)
    assert message.ts.startswith("17646")


def test_a_task_for_a_linked_person_goes_to_them_directly(
    users, slack, django_capture_on_commit_callbacks
):
    ChatIdentity.objects.create(user=users["r1"], slack_user_id="U0LINKED")
    _, task = posted_run(users, django_capture_on_commit_callbacks, assignee="r1")
    (posted,) = slack.of("chat.postMessage")
    assert posted["channel"] == "U0LINKED"
    # Stored as Slack answered: the direct conversation's id, which chat.update needs.
    assert ChatMessage.objects.get(task=task).channel == "D0LINKED"


def test_approve_decides_as_the_slack_users_firefly_user_and_the_message_says_so(
    users, client, slack, django_capture_on_commit_callbacks
):
    run, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Approve", "U0R1"))
    with django_capture_on_commit_callbacks(execute=True):
        answer = send(client, body, signed(body))
    assert answer.status_code == 200, answer.content
    task.refresh_from_db()
    assert (task.status, task.decided_by) == (HumanTask.Status.COMPLETED, users["r1"])
    assert Decision.objects.get(task=task).channel == "chat"
    entry = AuditEntry.objects.get(run=run, event="task.approved")
    assert (entry.actor_name, entry.data["channel"]) == ("r1", "chat")
    assert slack.of("users.info") == [{"user": "U0R1"}]
    (update,) = slack.of("chat.update")
    message = ChatMessage.objects.get(task=task)
    assert (update["channel"], update["ts"]) == (message.channel, message.ts)
    assert not [b for b in update["blocks"] if b["type"] == "actions"]
    assert "Approved by r1 (chat) at" in update["text"]
    assert message.closed_at is not None
    assert drive(run).status == Run.Status.SUCCEEDED


def test_a_tasks_messages_are_held_to_its_organization(
    users, slack, django_capture_on_commit_callbacks
):
    if not rls.active():
        pytest.skip("row-level security needs PostgreSQL")
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    other = Organization.objects.create(slug="elsewhere", name="Elsewhere")
    with rls.scoped(other.pk):
        assert not ChatMessage.objects.exists()
    with rls.scoped(task.organization_id):
        assert ChatMessage.objects.get().task_id == task.pk


def test_a_linked_account_wins_over_the_email_slack_reports(
    users, client, slack, django_capture_on_commit_callbacks
):
    # Slack says U0R1 is r1@example.com; the link made in Firefly says r2.
    ChatIdentity.objects.create(user=users["r2"], slack_user_id="U0R1")
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Approve", "U0R1"))
    with django_capture_on_commit_callbacks(execute=True):
        assert send(client, body, signed(body)).status_code == 200
    task.refresh_from_db()
    assert task.decided_by == users["r2"]
    assert slack.of("users.info") == []


def test_a_forged_signature_is_refused_and_changes_nothing(
    users, client, slack, django_capture_on_commit_callbacks
):
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Approve", "U0R1"))
    other = form(clicks(slack, "Approve", "U0R2"))
    for headers, sent in (
        (signed(body, secret="not-the-apps-secret"), body),
        # A signature of another body: the payload was altered on its way.
        (signed(other), body),
        ({"X-Slack-Request-Timestamp": str(int(time.time()))}, body),
        ({"X-Slack-Signature": "v0=" + "0" * 64, "X-Slack-Request-Timestamp": "soon"}, body),
    ):
        answer = send(client, sent, headers)
        assert answer.status_code == 401, headers
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    assert not Decision.objects.exists()
    assert [r.reason for r in refusals()] == [
        "X-Slack-Signature does not match the timestamp and body",
        "X-Slack-Signature does not match the timestamp and body",
        "no X-Slack-Signature header",
        "X-Slack-Request-Timestamp is missing or not a Unix time in seconds",
    ]
    assert slack.of("users.info") == []


def test_unsigned_requests_are_recorded_up_to_a_limit_a_minute(client, slack, settings):
    settings.FIREFLY_SLACK_REFUSALS_RECORDED_PER_MINUTE = 2
    body = form({"type": "block_actions"})
    # Two minutes' worth could straddle a minute's end: stay well inside one.
    if time.time() % 60 > 50:
        time.sleep(11)
    codes = [send(client, body, signed(body, secret="guess")).status_code for _ in range(4)]
    assert codes == [401] * 4
    assert len(refusals()) == 2


def test_a_request_signed_more_than_five_minutes_ago_is_refused(
    users, client, slack, django_capture_on_commit_callbacks
):
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Approve", "U0R1"))
    for stamp in (int(time.time()) - signing.MAX_AGE_S - 5, int(time.time()) + 3600):
        answer = send(client, body, signed(body, stamp=stamp))
        assert answer.status_code == 401
        assert b"more than 300 s is refused" in answer.content
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    assert len(refusals()) == 2


def test_a_replayed_request_or_click_is_refused(
    users, client, slack, django_capture_on_commit_callbacks
):
    run, task = posted_run(users, django_capture_on_commit_callbacks, quorum=2)
    body = form(clicks(slack, "Approve", "U0R1"))
    headers = signed(body)
    with django_capture_on_commit_callbacks(execute=True):
        assert send(client, body, headers).status_code == 200
    assert told(slack, "U0R1") == ["Your approval is recorded (1 of 2 needed)."]

    # The same request again, byte for byte; then the same click (its action_ts) signed
    # anew, as someone holding a copy of the payload and a signature of it would send.
    again = send(client, body, headers)
    assert again.status_code == 409
    resigned = send(client, body, signed(body, stamp=int(time.time()) - 1))
    assert resigned.status_code == 409
    assert [r.reason for r in refusals()] == ["this request was already received (a replay)"] * 2
    assert refusals()[0].data["slack_user"] == "U0R1"
    assert Decision.objects.filter(task=task).count() == 1
    # Refused before any decision was tried: no refusal in the run's chain either.
    assert not AuditEntry.objects.filter(run=run, event="task.refused").exists()


def test_a_signed_body_that_is_not_an_interaction_is_bad_input(
    users, client, slack, django_capture_on_commit_callbacks
):
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    for body in ("payload=%7Bnot+json", "nothing=here", form({"type": "block_actions", "user": 7})):
        answer = send(client, body, signed(body))
        assert answer.status_code in (200, 400), body
    assert [r.reason for r in refusals()] == ["the body is not a form with a JSON `payload`"] * 2
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN


def test_a_slack_user_firefly_does_not_know_is_told_privately_and_nothing_changes(
    users, client, slack, django_capture_on_commit_callbacks
):
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    for slack_user in ("U0NOBODY", "U0STRANGER"):
        body = form(clicks(slack, "Approve", slack_user))
        assert send(client, body, signed(body)).status_code == 200
    assert told(slack, "U0NOBODY") == [
        "Firefly could not ask Slack who you are (users.info: user_not_found)."
    ]
    assert told(slack, "U0STRANGER") == [
        "Your Slack email is not enough to tell who you are: no Firefly user has it."
    ]
    (ephemeral, _) = slack.of("chat.postEphemeral")
    assert ephemeral["channel"] == CHANNEL
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    assert [r.data["slack_user"] for r in refusals()] == ["U0NOBODY", "U0STRANGER"]
    assert slack.of("chat.update") == []


def test_without_email_matching_only_linked_accounts_decide(
    users, client, slack, settings, django_capture_on_commit_callbacks
):
    settings.FIREFLY_SLACK_MATCH_EMAIL = False
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Approve", "U0R1"))
    assert send(client, body, signed(body)).status_code == 200
    assert told(slack, "U0R1") == ["Your Slack account is not linked to a Firefly user."]
    assert slack.of("users.info") == []
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN


def test_the_runs_starter_is_told_why_not_and_the_refusal_is_audited(
    users, client, slack, django_capture_on_commit_callbacks
):
    users["starter"].groups.add(users["r1"].groups.get())
    run, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Approve", "U0START"))
    assert send(client, body, signed(body)).status_code == 200
    (said,) = told(slack, "U0START")
    assert said.startswith("Nothing changed: You started this run")
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    refused = AuditEntry.objects.get(run=run, event="task.refused")
    assert refused.actor_name == "starter"
    assert slack.of("chat.update") == []


def test_someone_outside_the_role_is_told_and_changes_nothing(
    users, client, slack, django_capture_on_commit_callbacks
):
    slack.people["U0OUT"] = "outsider@example.com"
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Reject", "U0OUT"))
    assert send(client, body, signed(body)).status_code == 200
    (said,) = told(slack, "U0OUT")
    assert said == f"Nothing changed: You may not act on task {task.pk}: it is for role reviewers."
    assert slack.of("views.open") == []
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    (refused,) = refusals()
    assert (refused.actor, refused.data["task"]) == (users["outsider"], task.pk)


def test_a_reviewer_of_another_organization_is_refused_as_if_the_task_did_not_exist(
    users, client, slack, django_user_model, django_capture_on_commit_callbacks
):
    # In the reviewers group (groups span organizations) but a member of another one.
    other = Organization.objects.create(slug="elsewhere", name="Elsewhere")
    stranger = django_user_model.objects.create_user("stranger", email="far@elsewhere.example")
    stranger.groups.add(users["r1"].groups.get())
    Membership.objects.create(user=stranger, organization=other)
    slack.people["U0FAR"] = "far@elsewhere.example"
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Approve", "U0FAR"))
    assert send(client, body, signed(body)).status_code == 200
    assert told(slack, "U0FAR") == [f"Task {task.pk} is not yours to see."]
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    (refused,) = refusals()
    assert refused.actor == stranger


def test_a_click_from_another_workspace_is_refused(
    users, client, slack, settings, django_capture_on_commit_callbacks
):
    settings.FIREFLY_SLACK_TEAM_ID = "T0OTHER"
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Approve", "U0R1"))
    answer = send(client, body, signed(body))
    assert answer.status_code == 403
    assert b"is not this Firefly's" in answer.content
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    assert len(refusals()) == 1


def test_a_decision_on_the_web_updates_the_message(
    users, client, slack, django_capture_on_commit_callbacks
):
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    client.force_login(users["r2"])
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(f"/tasks/{task.pk}/approve/", {"comment": "ok"})
    assert answer.status_code in (200, 302)
    (update,) = slack.of("chat.update")
    assert update["ts"] == ChatMessage.objects.get(task=task).ts
    assert "Approved by r2 (web) at" in update["text"]
    assert not [b for b in update["blocks"] if b["type"] == "actions"]

    # A click on the old message now: told who decided, nothing more.
    client.logout()
    body = form(clicks(slack, "Approve", "U0R1"))
    assert send(client, body, signed(body)).status_code == 200
    (said,) = told(slack, "U0R1")
    assert f"Task {task.pk} was already decided by r2 at" in said
    assert Decision.objects.filter(task=task).count() == 1


def test_a_decision_through_the_api_updates_the_message(
    users, client, slack, django_capture_on_commit_callbacks
):
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    client.force_login(users["r3"])
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            f"/api/v1/tasks/{task.pk}/reject/",
            {"comment": "flaky"},
            content_type="application/json",
        )
    assert answer.status_code == 200, answer.content
    (update,) = slack.of("chat.update")
    assert "Rejected by r3 (api) at" in update["text"]
    assert update["text"].endswith(": flaky")


def test_the_deadline_closing_a_task_updates_the_message(
    users, slack, django_capture_on_commit_callbacks
):
    _, task = posted_run(users, django_capture_on_commit_callbacks, timeout_hours=1)
    HumanTask.objects.filter(pk=task.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.task_expire(task_id=task.pk)
    (update,) = slack.of("chat.update")
    assert "Expired: the deadline passed at" in update["text"]
    assert not [b for b in update["blocks"] if b["type"] == "actions"]


def test_reject_opens_a_modal_and_its_submission_rejects_with_the_reason(
    users, client, slack, django_capture_on_commit_callbacks
):
    run, task = posted_run(users, django_capture_on_commit_callbacks)
    body = form(clicks(slack, "Reject", "U0R3"))
    assert send(client, body, signed(body)).status_code == 200
    (opened,) = slack.of("views.open")
    assert opened["trigger_id"] == "1337.4242.abcdef"
    view = opened["view"]
    assert view["callback_id"] == "firefly_reject"
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN

    empty = form(submission(view, "U0R3", "   "))
    answer = send(client, empty, signed(empty))
    assert answer.json() == {
        "response_action": "errors",
        "errors": {"reason": "Say why you reject."},
    }

    # Someone else submitting the modal is held to the same rules.
    stranger = form(submission(view, "U0STRANGER", "no"))
    assert (
        "not enough to tell who you are"
        in send(client, stranger, signed(stranger)).json()["errors"]["reason"]
    )

    done = form(submission(view, "U0R3", "wrong version"))
    with django_capture_on_commit_callbacks(execute=True):
        answer = send(client, done, signed(done))
    assert (answer.status_code, answer.content) == (200, b"")
    task.refresh_from_db()
    assert (task.status, task.decided_by) == (HumanTask.Status.REJECTED, users["r3"])
    decision = Decision.objects.get(task=task)
    assert (decision.channel, decision.comment) == ("chat", "wrong version")
    (update,) = slack.of("chat.update")
    assert "Rejected by r3 (chat) at" in update["text"]
    assert update["text"].endswith(": wrong version")
    assert drive(run).status == Run.Status.REJECTED


def test_calls_to_slack_go_through_the_outbound_guard(
    users, slack, settings, django_capture_on_commit_callbacks
):
    # The fake listens on loopback: without the address listed, the guard refuses it.
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = []
    _, task = posted_run(users, django_capture_on_commit_callbacks)
    assert slack.calls == []
    assert not ChatMessage.objects.exists()
    assert task.status == HumanTask.Status.OPEN


def test_chat_is_off_without_a_token(
    users, client, slack, settings, django_capture_on_commit_callbacks
):
    settings.FIREFLY_SLACK_BOT_TOKEN = ""
    posted_run(users, django_capture_on_commit_callbacks)
    assert slack.calls == []
    body = form({"type": "block_actions"})
    assert send(client, body, signed(body)).status_code == 404


def test_only_a_post_reaches_the_endpoint(client, slack):
    assert client.get(INTERACTIONS).status_code == 405
    assert SECRET  # the endpoint is on: a GET is refused for its method alone


def test_only_superusers_link_slack_accounts(users, client, django_user_model):
    # An organization's admin linking their Slack account to someone else's user would
    # decide as that user: the admin pages of links are for Firefly's operators alone.
    client.force_login(users["boss"])
    assert client.get("/admin/chat/chatidentity/").status_code == 403
    assert (
        client.post(
            "/admin/chat/chatidentity/add/", {"user": users["r1"].pk, "slack_user_id": "U0BOSS"}
        ).status_code
        == 403
    )
    assert not ChatIdentity.objects.exists()
    root = django_user_model.objects.create_superuser("root", "root@example.com", "x")
    client.force_login(root)
    added = client.post(
        "/admin/chat/chatidentity/add/", {"user": users["r1"].pk, "slack_user_id": "U0R1"}
    )
    assert added.status_code == 302
    assert ChatIdentity.objects.get().user == users["r1"]
