"""/api/v1/me/notifications/: one's own preferences by channel; chat needs a linked account."""

from __future__ import annotations

import pytest

from approvals import preferences
from chat.models import ChatIdentity
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db

URL = "/api/v1/me/notifications/"


def test_read_then_change_only_what_is_sent(client_for, users, settings):
    settings.FIREFLY_SLACK_BOT_TOKEN = "xoxb-test"
    api = client_for(users["r1"])
    body = api.get(URL).json()
    assert body["email"] == {
        "on": True,
        "frequency": "immediate",
        "events": {"new_task": True, "due_soon": True, "task_decided": True, "run_finished": True},
        "reachable": True,
        "unreachable_reason": "",
    }
    assert body["chat"]["reachable"] is False
    assert "linked" in body["chat"]["unreachable_reason"]

    ChatIdentity.objects.create(user=users["r1"], slack_user_id="U0R1")
    change = {"chat": {"frequency": "daily", "events": {"run_finished": False}}}
    response = api.put(URL, change, format="json")
    assert response.status_code == 200, response.content
    chat = response.json()["chat"]
    assert (chat["on"], chat["frequency"], chat["reachable"]) == (True, "daily", True)
    assert chat["events"] == {
        "new_task": True,
        "due_soon": True,
        "task_decided": True,
        "run_finished": False,
    }
    # Email as it was; the routes follow.
    assert response.json()["email"]["frequency"] == "immediate"
    assert preferences.route(users["r1"], "run.finished", "chat") == preferences.OFF
    assert preferences.route(users["r1"], "task.opened", "chat") == preferences.DIGEST
    assert preferences.route(users["r1"], "run.finished") == preferences.NOW
    # Someone else's preferences are untouched.
    assert preferences.route(users["r2"], "run.finished", "chat") == preferences.NOW


def test_a_bad_frequency_is_named_and_changes_nothing(client_for, users):
    api = client_for(users["r1"])
    error = error_of(api.put(URL, {"chat": {"frequency": "weekly"}}, format="json"), 400)
    assert "chat" in str(error["details"])
    assert api.get(URL).json()["chat"]["frequency"] == "immediate"
    error_of(client_for(None).get(URL), 401)
