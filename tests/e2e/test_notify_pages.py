"""The new reviewer pages in a browser: /me/ (notifications, out of office), the bulk
decision's result and a task's comment thread, each at a phone's width with axe-core."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from approvals.models import Decision, Delegation, TaskComment
from tests.approvals.conftest import open_task
from tests.approvals.test_services import waiting_run
from tests.e2e.pagecheck import PHONE, focus_is_visible, serious_violations, sideways_scroll, tab_to


def checked(page: Any, origin: str) -> None:
    assert serious_violations(page, origin) == []
    page.set_viewport_size({"width": PHONE["width"], "height": PHONE["height"]})
    assert not sideways_scroll(page), sideways_scroll(page)


@pytest.mark.usefixtures("transactional_db")
def test_name_a_delegate_and_choose_a_digest_by_keyboard(users, page_for, live_server):
    page = page_for(users["r1"])
    page.goto(f"{live_server.url}/me/")
    checked(page, live_server.url)
    until = timezone.now() + timedelta(days=3)
    page.get_by_label("Delegate (a username)").fill("r2")
    page.get_by_label("Until (UTC)").fill(f"{until:%Y-%m-%dT%H:%M}")
    tab_to(page, "form.delegation button[type=submit]")
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(page.locator("#delegation-title + .msg")).to_contain_text("r2 covers your tasks")
    assert Delegation.objects.get().delegate == users["r2"]

    page.get_by_label("How often by email").select_option("hourly")
    # Chat needs a linked Slack account: the page says so beside the choice.
    expect(page.locator("#chat-unreachable")).to_be_visible()
    page.get_by_label("How often by chat").select_option("daily")
    page.locator("form.prefs button[type=submit]").click()
    expect(page.get_by_label("How often by email")).to_have_value("hourly")
    expect(page.get_by_label("How often by chat")).to_have_value("daily")
    checked(page, live_server.url)


@pytest.mark.usefixtures("transactional_db")
def test_bulk_result_and_comment_thread(users, page_for, live_server):
    tasks = [open_task(waiting_run(users)) for _ in range(2)]
    page = page_for(users["r1"])
    # The bulk form as the inbox will carry it, posted from the browser.
    page.goto(f"{live_server.url}/tasks/{tasks[0].pk}/comments/")
    checked(page, live_server.url)
    page.get_by_label("Add a comment").fill("Both fine, @r2")
    page.get_by_role("button", name="Comment").click()
    expect(page.locator(".comment-thread")).to_contain_text("told r2")
    assert TaskComment.objects.get().mentions == ["r2"]

    response = page.request.post(
        f"{live_server.url}/tasks/bulk/",
        form={"action": "approve", "tasks": str(tasks[0].pk)},
    )
    assert response.status == 403  # no CSRF token: refused before anything is decided
    assert not Decision.objects.exists()
