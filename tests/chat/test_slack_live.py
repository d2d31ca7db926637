"""Over real HTTP: Slack's fake posts the task, a signed click reaches the running server."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from approvals.models import Decision, HumanTask
from chat.models import ChatMessage
from pipelines.models import SecurityEvent
from tests.approvals.conftest import open_task
from tests.approvals.test_services import waiting_run
from tests.chat.conftest import INTERACTIONS, click, form, signed

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_signed_click_over_http_decides_and_its_replay_is_refused(
    users: dict[str, Any], slack: Any, live_server: Any
) -> None:
    task = open_task(waiting_run(users))
    (posted,) = slack.of("chat.postMessage")
    message = ChatMessage.objects.get(task=task)
    body = form(click(posted, "Approve", "U0R1", channel=message.channel, ts=message.ts))
    headers = {**signed(body), "Content-Type": "application/x-www-form-urlencoded"}
    url = live_server.url + INTERACTIONS

    answer = requests.post(url, data=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    task.refresh_from_db()
    assert (task.status, task.decided_by) == (HumanTask.Status.COMPLETED, users["r1"])
    assert Decision.objects.get(task=task).channel == "chat"
    (update,) = slack.of("chat.update")
    assert "Approved by r1 (chat)" in update["text"]

    replay = requests.post(url, data=body, headers=headers, timeout=30)
    assert replay.status_code == 409
    assert SecurityEvent.objects.get(event="chat.refused").address == "127.0.0.1"
