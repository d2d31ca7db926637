"""Chat as a notification channel, and choice and form tasks in chat: who is told by direct
message, digests in one message, options as buttons or a select, forged options refused."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from approvals import digests, preferences
from approvals import services as approvals
from approvals.comments import task_comment
from approvals.models import Decision, HumanTask, QueuedNotification
from chat import blocks
from chat.models import ChatIdentity, ChatMessage
from pipelines import services
from pipelines.models import Run, SecurityEvent
from tests.approvals.conftest import drive, open_task
from tests.chat.conftest import CHANNEL, FakeSlack, form, send, signed, user_of

pytestmark = pytest.mark.django_db

EVERYTHING = dict.fromkeys(preferences.FIELDS, True)


def wants(user: Any, **changes: Any) -> None:
    """Everything by both channels at once, but for `changes`."""
    preferences.preferences_set(user=user, **{"frequency": "immediate", **EVERYTHING, **changes})


def link(user: Any, slack_user: str) -> None:
    ChatIdentity.objects.create(user=user, slack_user_id=slack_user)


def step(users: dict[str, Any], kind: str, name: str = "asked", **config: Any) -> HumanTask:
    """A one-step pipeline of `kind` for the reviewers (or `assignee`), started and waiting."""
    if "assignee" not in config:
        config["assignee_role"] = "reviewers"
    services.pipeline_create_or_get(
        member_role="starter",
        spec={
            "name": name,
            "steps": [
                {
                    "name": "ask",
                    "type": kind,
                    "config": config,
                }
            ],
        },
    )
    run = services.run_start(pipeline=name, inputs={}, actor=users["starter"])
    return open_task(drive(run))


def direct(slack: FakeSlack, slack_user: str) -> list[dict[str, Any]]:
    """The messages posted to a Slack user directly."""
    return [c for c in slack.of("chat.postMessage") if c["channel"] == slack_user]


def elements(posted: dict[str, Any]) -> list[dict[str, Any]]:
    (actions,) = [b for b in posted["blocks"] if b["type"] == "actions"]
    return list(actions["elements"])


def choice_click(
    posted: dict[str, Any], element: dict[str, Any], slack_user: str, value: str
) -> dict[str, Any]:
    """What Slack sends when a person picks `value` with a button or the select of a
    posted message (the message's own action id)."""
    (message,) = ChatMessage.objects.filter(channel=posted["channel"])
    action: dict[str, Any] = {
        "type": element["type"],
        "action_id": element["action_id"],
        "block_id": f"firefly_task:{message.task_id}",
        "action_ts": f"{timezone.now().timestamp():.6f}",
    }
    if element["type"] == "static_select":
        action["selected_option"] = {"text": {"type": "plain_text", "text": value}, "value": value}
    else:
        action["value"] = value
    return {
        "type": "block_actions",
        "user": user_of(slack_user),
        "team": {"id": "T0FIREFLY", "domain": "firefly"},
        "trigger_id": "1337.4242.abcdef",
        "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel},
        "channel": {"id": message.channel},
        "response_url": "https://hooks.slack.com/actions/T0FIREFLY/1/abc",
        "actions": [action],
    }


# --- who is told by chat ------------------------------------------------------------------


def test_a_new_task_is_a_direct_message_to_each_linked_reviewer_who_wants_chat(
    users, slack, django_capture_on_commit_callbacks
):
    link(users["r1"], "U0R1")
    link(users["r2"], "U0R2")
    wants(users["r2"], chat=False)  # r2 turned chat off: their email still comes
    with django_capture_on_commit_callbacks(execute=True):
        task = step(users, "approval")
    (dm,) = direct(slack, "U0R1")
    assert "needs you" in dm["text"]
    assert {e["text"]["text"] for e in elements(dm)} == {"Approve", "Reject"}
    # Kept, so that it is updated once the task is decided.
    assert ChatMessage.objects.filter(task=task, channel="D0R1").exists()
    assert direct(slack, "U0R2") == []
    assert [m.to for m in mail.outbox if m.to == ["r2@example.com"]]
    # The team's channel still has the task (it is for a role, not one person).
    assert [c for c in slack.of("chat.postMessage") if c["channel"] == CHANNEL]


def test_a_person_with_no_linked_slack_account_gets_nothing_by_chat(
    users, slack, django_capture_on_commit_callbacks
):
    # Slack knows r3 by email (U0R3): that names who clicks, never where to write to.
    link(users["r1"], "U0R1")
    wants(users["r3"], chat_frequency="hourly")
    with django_capture_on_commit_callbacks(execute=True):
        step(users, "approval")
    assert direct(slack, "U0R3") == []
    assert direct(slack, "U0R1")
    assert not QueuedNotification.objects.filter(user=users["r3"], channel="chat").exists()
    assert preferences.route(users["r3"], "task.opened", "chat") == preferences.DIGEST


def test_a_linked_reviewer_without_an_email_address_still_hears_by_chat(
    users, slack, django_capture_on_commit_callbacks
):
    users["r3"].email = ""
    users["r3"].save(update_fields=["email"])
    link(users["r3"], "U0R3")
    with django_capture_on_commit_callbacks(execute=True):
        step(users, "approval")
    assert len(direct(slack, "U0R3")) == 1
    assert not [m for m in mail.outbox if "" in m.to]


def test_a_linked_assignee_who_turned_chat_off_is_not_written_to_the_task_goes_to_the_channel(
    users, slack, django_capture_on_commit_callbacks
):
    link(users["r1"], "U0LINKED")
    wants(users["r1"], chat_new_task=False)
    with django_capture_on_commit_callbacks(execute=True):
        step(users, "approval", assignee="r1")
    channels = [c["channel"] for c in slack.of("chat.postMessage")]
    assert channels == [CHANNEL]


def test_the_requester_hears_the_gate_and_the_run_end_by_chat(
    users, slack, django_capture_on_commit_callbacks, settings
):
    settings.FIREFLY_BASE_URL = "https://firefly.example"
    link(users["starter"], "U0START")
    wants(users["starter"], email=False)
    with django_capture_on_commit_callbacks(execute=True):
        task = step(users, "approval")
    with django_capture_on_commit_callbacks(execute=True):
        approvals.task_approve(task_id=task.pk, user=users["r1"])
    told = {c["text"]: json.dumps(c["blocks"]) for c in direct(slack, "U0START")}
    assert set(told) == {
        f"Run {task.run_id}, step ask: completed by r1",
        f"Run {task.run_id} of asked succeeded",
    }
    # Each line with its link: the task's page, the run's page.
    assert f"/tasks/{task.pk}/|" in told[f"Run {task.run_id}, step ask: completed by r1"]
    assert f"/runs/{task.run_id}/|" in told[f"Run {task.run_id} of asked succeeded"]
    assert not [m for m in mail.outbox if m.to == ["starter@example.com"]]


def test_a_reminder_and_a_mention_reach_a_linked_person_by_chat(
    users, slack, django_capture_on_commit_callbacks
):
    link(users["r1"], "U0R1")
    wants(users["r1"], email=False)
    with django_capture_on_commit_callbacks(execute=True):
        task = step(users, "approval", timeout_hours=10, remind_before_hours=2)
    assert digests.reminders_send(timezone.now() + timedelta(hours=8, minutes=30)) == 1
    reminder = direct(slack, "U0R1")[-1]
    assert reminder["text"].endswith("is due soon")
    # The reminder carries the task's buttons too, and is updated once it is decided.
    assert {e["text"]["text"] for e in elements(reminder)} == {"Approve", "Reject"}
    assert ChatMessage.objects.filter(task=task, channel="D0R1").count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        task_comment(task_id=task.pk, user=users["r2"], body="@r1 have a look")
    assert direct(slack, "U0R1")[-1]["text"] == f"r2 mentioned you on run {task.run_id}, step ask"
    assert not [m for m in mail.outbox if m.to == ["r1@example.com"]]


def test_a_chat_digest_is_one_message_with_one_link_per_task(
    users, slack, django_capture_on_commit_callbacks, settings
):
    settings.FIREFLY_BASE_URL = "https://firefly.example"
    link(users["r1"], "U0R1")
    wants(users["r1"], email=False, chat_frequency="hourly")
    with django_capture_on_commit_callbacks(execute=True):
        tasks = [step(users, "approval", f"p{i}") for i in range(3)]
    assert direct(slack, "U0R1") == []
    now = timezone.now()
    assert digests.digests_send(now) == 1
    (digest,) = direct(slack, "U0R1")
    assert digest["text"] == "Your digest: 3 updates"
    links = re.findall(r"https://firefly.example/tasks/(\d+)/", json.dumps(digest["blocks"]))
    assert sorted(map(int, links)) == sorted(t.pk for t in tasks)
    # Nothing of r1's went by email; within the hour nothing more goes by chat.
    assert not [m for m in mail.outbox if m.to == ["r1@example.com"]]
    with django_capture_on_commit_callbacks(execute=True):
        step(users, "approval", "p3")
    assert digests.digests_send(now + timedelta(minutes=20)) == 0
    assert digests.digests_send(now + timedelta(minutes=61)) == 1
    assert len(direct(slack, "U0R1")) == 2


def test_a_digest_for_someone_unlinked_since_is_dropped_not_sent(
    users, slack, django_capture_on_commit_callbacks
):
    link(users["r1"], "U0R1")
    wants(users["r1"], chat_frequency="daily")
    with django_capture_on_commit_callbacks(execute=True):
        step(users, "approval")
    assert QueuedNotification.objects.filter(user=users["r1"], channel="chat").count() == 1
    ChatIdentity.objects.filter(user=users["r1"]).delete()
    assert digests.digests_send(timezone.now()) == 0
    assert direct(slack, "U0R1") == []
    assert not QueuedNotification.objects.filter(sent_at__isnull=True, channel="chat").exists()


def test_a_long_digest_keeps_within_slacks_blocks_and_counts_the_rest():
    lines = [
        (f"Run {i}, step review: an approval needs you" + "x" * 200, f"https://f/t/{i}/")
        for i in range(1000)
    ]
    text, content = blocks.digest_message(lines)
    assert text == "Your digest: 1000 updates"
    assert len(content) <= blocks.BLOCKS_MAX
    assert all(len(b["text"]["text"]) <= blocks.TEXT_MAX for b in content[1:])
    shown = len(re.findall(r"https://f/t/\d+/", json.dumps(content)))
    assert 0 < shown < 1000
    assert content[-1]["text"]["text"].startswith(f"…and {1000 - shown} more")


# --- choice and form tasks in chat ------------------------------------------------------------


def channel_message(slack: FakeSlack) -> dict[str, Any]:
    (posted,) = [c for c in slack.of("chat.postMessage") if c["channel"] == CHANNEL]
    return posted


def test_a_choice_is_one_button_per_option_and_a_click_chooses_through_the_service(
    users, client, slack, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        task = step(users, "choice", options=["ship", "hold", "cancel"])
    posted = channel_message(slack)
    buttons = elements(posted)
    assert [(b["type"], b["text"]["text"], b["value"]) for b in buttons] == [
        ("button", "ship", "ship"),
        ("button", "hold", "hold"),
        ("button", "cancel", "cancel"),
    ]
    assert len({b["action_id"] for b in buttons}) == 3
    body = form(choice_click(posted, buttons[1], "U0R1", "hold"))
    with django_capture_on_commit_callbacks(execute=True):
        assert send(client, body, signed(body)).status_code == 200
    task.refresh_from_db()
    assert (task.status, task.decided_by) == (HumanTask.Status.COMPLETED, users["r1"])
    decision = Decision.objects.get(task=task)
    assert (decision.action, decision.channel, decision.data["choice"]) == (
        "choose",
        "chat",
        "hold",
    )
    assert drive(task.run).steps.get(step_name="ask").outputs["choice"] == "hold"
    (update,) = slack.of("chat.update")
    assert update["text"].endswith(
        f"Chosen: hold, by r1 (chat) at {task.decided_at:%Y-%m-%d %H:%M} UTC"
    )
    assert not [b for b in update["blocks"] if b["type"] == "actions"]


def test_many_options_are_one_select_whose_choice_decides(
    users, client, slack, django_capture_on_commit_callbacks
):
    options = [f"region-{i}" for i in range(12)]
    with django_capture_on_commit_callbacks(execute=True):
        task = step(users, "choice", options=options)
    posted = channel_message(slack)
    (select,) = elements(posted)
    assert select["type"] == "static_select"
    assert [o["value"] for o in select["options"]] == options
    body = form(choice_click(posted, select, "U0R2", "region-7"))
    with django_capture_on_commit_callbacks(execute=True):
        assert send(client, body, signed(body)).status_code == 200
    assert Decision.objects.get(task=task).data["choice"] == "region-7"


def test_options_beyond_slacks_value_limits_get_a_link_instead(
    users, slack, django_capture_on_commit_callbacks
):
    options = [f"{i}: " + "a" * 200 for i in range(7)]  # a select's values hold 150
    with django_capture_on_commit_callbacks(execute=True):
        step(users, "choice", options=options)
    (only,) = elements(channel_message(slack))
    assert only["text"]["text"] == "Open in Firefly"
    assert "/tasks/" in only["url"]
    short = [f"option {i}" for i in range(3)]
    for element in blocks._choice_elements(HumanTask(pk=1, options=short)) or []:
        assert len(element["value"]) <= blocks.BUTTON_VALUE_MAX
        assert len(element["text"]["text"]) <= blocks.BUTTON_TEXT_MAX


def test_a_click_with_an_option_the_task_does_not_have_is_refused_and_changes_nothing(
    users, client, slack, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        task = step(users, "choice", options=["ship", "hold"])
    posted = channel_message(slack)
    # Signed by Slack all the same: a value the message never offered.
    body = form(choice_click(posted, elements(posted)[0], "U0R1", "ship-it-anyway"))
    with django_capture_on_commit_callbacks(execute=True):
        assert send(client, body, signed(body)).status_code == 200
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    assert not Decision.objects.filter(task=task).exists()
    assert task.run.steps.get(step_name="ask").status == "waiting"
    (refused,) = SecurityEvent.objects.filter(event="chat.refused")
    assert "'ship-it-anyway' is not one of the options" in refused.reason
    assert refused.data["task"] == task.pk
    assert refused.actor_id == users["r1"].pk
    (told,) = slack.of("chat.postEphemeral")
    assert told["user"] == "U0R1"
    assert told["text"].startswith("Nothing changed:")
    assert slack.of("chat.update") == []


def test_a_choice_click_on_an_approval_is_refused(
    users, client, slack, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        task = step(users, "approval")
    posted = channel_message(slack)
    forged = {"type": "button", "action_id": f"choose:{task.pk}:0"}
    body = form(choice_click(posted, forged, "U0R1", "approve"))
    assert send(client, body, signed(body)).status_code == 200
    task.refresh_from_db()
    assert task.is_open
    assert not Decision.objects.filter(task=task).exists()
    assert SecurityEvent.objects.filter(event="chat.refused", data__task=task.pk).count() == 1


def test_a_forged_or_replayed_choice_click_is_refused(
    users, client, slack, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        task = step(users, "choice", options=["ship", "hold"])
    posted = channel_message(slack)
    body = form(choice_click(posted, elements(posted)[0], "U0R1", "ship"))
    forged = send(client, body, signed(body, secret="not-the-signing-secret"))
    assert forged.status_code == 401
    task.refresh_from_db()
    assert task.is_open
    with django_capture_on_commit_callbacks(execute=True):
        headers = signed(body)
        assert send(client, body, headers).status_code == 200
    # The same request again (a replay of the click that decided), then the same click
    # signed anew: both refused, still one decision.
    assert send(client, body, headers).status_code == 409
    assert send(client, body, signed(body)).status_code == 409
    assert Decision.objects.filter(task=task).count() == 1
    refused = SecurityEvent.objects.filter(event="chat.refused").order_by("pk")
    reasons = list(refused.values_list("reason", flat=True))
    assert len(reasons) == 3
    assert "does not match" in reasons[0]
    assert all("replay" in r for r in reasons[1:])


def test_a_form_task_links_to_its_page_and_its_link_click_decides_nothing(
    users, client, slack, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        task = step(users, "input", form_schema={"type": "object"})
    posted = channel_message(slack)
    (only,) = elements(posted)
    assert only["text"]["text"] == "Open in Firefly"
    assert only["url"].endswith(f"/tasks/{task.pk}/")
    assert "value" not in only
    # Slack reports a link button's click too.
    body = form(choice_click(posted, only, "U0R1", ""))
    assert send(client, body, signed(body)).status_code == 200
    task.refresh_from_db()
    assert task.is_open
    assert not Decision.objects.filter(task=task).exists()
    assert Run.objects.get(pk=task.run_id).status != Run.Status.SUCCEEDED


# --- the preferences page -----------------------------------------------------------------


def test_the_page_says_chat_needs_a_linked_account_and_saves_chat_choices(users, client, slack):
    client.force_login(users["r1"])
    page = client.get("/me/").content.decode()
    assert "Chat needs your Slack account linked to Firefly" in page
    link(users["r1"], "U0R1")
    page = client.get("/me/").content.decode()
    assert "Chat needs your Slack account" not in page
    form_data = {"email": "on", "new_task": "on", "chat": "on", "chat_new_task": "on"}
    response = client.post(
        "/me/notifications/", {**form_data, "frequency": "daily", "chat_frequency": "immediate"}
    )
    assert response.status_code == 302
    assert preferences.route(users["r1"], "task.opened", "chat") == preferences.NOW
    assert preferences.route(users["r1"], "task.due_soon", "chat") == preferences.OFF
    assert preferences.route(users["r1"], "task.opened") == preferences.DIGEST
    bad = client.post(
        "/me/notifications/", {**form_data, "frequency": "daily", "chat_frequency": "x"}
    )
    assert bad.status_code == 400
    assert "chat_frequency: &#x27;x&#x27; is not a frequency" in bad.content.decode()
