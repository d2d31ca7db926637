"""Deciding from an email in a real browser: links read from the mail Firefly sent."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import Browser, expect

from approvals import email_links
from approvals.models import Decision, HumanTask
from pipelines.models import SecurityEvent
from tests.approvals.conftest import open_task
from tests.approvals.test_services import waiting_run
from tests.e2e.pagecheck import PHONE, serious_violations, sideways_scroll

LINK = re.compile(r"(Approve|Reject): https?://[^/\s]+(/email/[^/\s]+/)")


@pytest.fixture
def mailed(transactional_db: Any, users: dict[str, Any], settings: Any) -> dict[str, Any]:
    """A task waiting for the reviewers, and the links mailed to r1, by label."""
    settings.FIREFLY_EMAIL_ACTIONS = True
    task = open_task(waiting_run(users))
    (message,) = [m for m in mail.outbox if m.to == ["r1@example.com"]]
    return {"task": task, "links": dict(LINK.findall(str(message.body)))}


def test_a_reviewer_approves_from_the_mail_and_a_second_click_is_refused(
    mailed, browser: Browser, live_server
):
    context = browser.new_context(viewport={"width": PHONE["width"], "height": PHONE["height"]})
    page = context.new_page()
    approve = live_server.url + mailed["links"]["Approve"]
    page.goto(approve)
    expect(page.get_by_role("heading", level=1)).to_have_text("Approve: review")
    expect(page.locator("pre.json")).to_contain_text('"v": 1')
    assert serious_violations(page, live_server.url) == []
    assert not sideways_scroll(page), sideways_scroll(page)
    task = HumanTask.objects.get(pk=mailed["task"].pk)
    assert task.status == HumanTask.Status.OPEN  # opening the link decided nothing

    page.get_by_label("Comment").fill("approved on the train")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("alert")).to_contain_text("approve recorded")
    task.refresh_from_db()
    assert (task.status, task.decided_by.get_username()) == ("completed", "r1")
    assert Decision.objects.get(task=task).channel == "email"

    page.goto(approve)
    expect(page.locator(".msg-info")).to_contain_text("This link was used at")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    context.close()


def test_an_expired_link_and_a_forwarded_link_decide_nothing(
    mailed, browser: Browser, page_for, users, live_server
):
    task = mailed["task"]
    expired = email_links.token_for(
        task, users["r1"], "approve", expires_at=timezone.now() - timedelta(hours=1)
    )
    context = browser.new_context()
    page = context.new_page()
    answer = page.goto(f"{live_server.url}/email/{expired}/")
    assert answer is not None
    assert answer.status == 410
    expect(page.get_by_role("alert")).to_contain_text("This link expired at")
    context.close()

    # r1 forwards the message to r2, who is signed in: the link is not theirs.
    other = page_for(users["r2"])
    answer = other.goto(live_server.url + mailed["links"]["Reject"])
    assert answer is not None
    assert answer.status == 403
    expect(other.get_by_role("alert")).to_contain_text("sent to someone else")
    expect(other.get_by_role("button", name="Reject")).to_have_count(0)

    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    assert not Decision.objects.filter(task=task).exists()
    assert SecurityEvent.objects.filter(event="email.link_refused").count() == 2
