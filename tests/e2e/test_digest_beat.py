"""Mail a reviewer keeps turned on, end to end: a real worker mails through a real SMTP
server, a real beat sends the digest and the deadline reminder, and the links in them
lead a browser to each task."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from email import message_from_bytes
from email.message import Message

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from approvals import preferences
from approvals.models import HumanTask
from pipelines import services
from tests.conftest import wait_for
from tests.workers import WorkerProcess, beat_process

pytestmark = pytest.mark.worker

TASK_LINK = re.compile(r"https?://[^/\s]+(/tasks/(\d+)/)")


def mails(received: list[bytes], to: str) -> list[Message]:
    return [m for m in map(message_from_bytes, received) if m["To"] == to]


def text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError(f"no text part in {message['Subject']!r}")


def test_a_real_beat_sends_one_digest_and_one_reminder_whose_links_open_each_task(
    worker, users, smtp_server, live_server, page_for, tmp_path
):
    port, received = smtp_server
    mail_env = {"DJANGO_SETTINGS_MODULE": "tests.e2e.mail_settings"}
    mail_env |= {"FIREFLY_TEST_SMTP_PORT": str(port), "FIREFLY_BASE_URL": live_server.url}
    worker.stop()
    mailing = WorkerProcess("mailing", env=mail_env)
    mailing.start()
    try:
        # r2 reads an hourly digest; r1 keeps the default: each news at once.
        preferences.preferences_set(
            user=users["r2"], frequency="hourly", email=True, new_task=True, due_soon=True
        )
        gate = {"assignee_role": "reviewers", "timeout_hours": 10, "remind_before_hours": 2}
        services.pipeline_create(
            member_role="starter",
            spec={
                "name": "timed",
                # A step before the gate: the mailing worker, not this process, opens
                # the task and sends its mail.
                "steps": [
                    {"name": "intake", "type": "noop"},
                    {"name": "review", "type": "approval", "config": gate, "after": ["intake"]},
                ],
            },
        )
        runs = [
            services.run_start(pipeline="timed", inputs={"n": n}, actor=users["starter"])
            for n in range(3)
        ]
        wait_for(
            lambda: len(mails(received, "r1@example.com")) == 3, timeout=30, message="r1's mail"
        )
        tasks = sorted(HumanTask.objects.filter(run__in=runs), key=lambda t: t.pk)
        assert mails(received, "r2@example.com") == []  # queued for the digest, not sent
        # Setup only: as if eight hours had passed for the first task, its reminder is due.
        HumanTask.objects.filter(pk=tasks[0].pk).update(
            remind_at=timezone.now() - timedelta(minutes=1)
        )
        with beat_process(
            "tests.e2e.mail_settings", tmp_path / "beat", "test-digest.log", mail_env
        ):
            wait_for(
                lambda: (
                    mails(received, "r2@example.com")
                    and len(mails(received, "r1@example.com")) == 4
                ),
                timeout=30,
                message="r2's digest and r1's reminder",
            )
            time.sleep(2)  # more beats: nothing more is sent
    finally:
        mailing.stop()
        worker.start()

    (digest,) = mails(received, "r2@example.com")
    assert digest["Subject"] == "[Firefly] Your digest: 3 updates"
    linked = [int(task_id) for _, task_id in TASK_LINK.findall(text_of(digest))]
    assert sorted(linked) == [t.pk for t in tasks]  # one link per task, each once
    reminders = [m for m in mails(received, "r1@example.com") if "due soon" in m["Subject"]]
    assert len(reminders) == 1
    assert f"/tasks/{tasks[0].pk}/" in text_of(reminders[0])

    page = page_for(users["r2"])
    for path, _ in TASK_LINK.findall(text_of(digest)):
        page.goto(live_server.url + path)
        expect(page.get_by_role("heading", level=1)).to_contain_text("review")
        expect(page.get_by_role("button", name="Approve")).to_be_visible()
