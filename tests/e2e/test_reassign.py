"""An admin reassigns a task from its page with the keyboard alone; the inbox's views are
links the keyboard reaches, the current one marked."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from approvals.models import HumanTask
from pipelines import services
from tests.approvals.conftest import drive, open_task
from tests.e2e.test_organization_pages import focus_is_visible, tab_to
from tests.web.conftest import gate_pipeline


def waiting_task(users: dict[str, Any], version: str = "1.0") -> HumanTask:
    gate_pipeline()
    run = services.run_start(pipeline="gated", inputs={"version": version}, actor=users["starter"])
    return open_task(drive(run))


def test_an_admin_reassigns_from_the_task_page_with_the_keyboard_only(
    transactional_db, users, page_for, live_server
):
    task = waiting_task(users)
    page = page_for(users["boss"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")

    tab_to(page, "input[name=to]")
    assert focus_is_visible(page), "no visible focus on the member field"
    page.keyboard.type("r3")
    page.keyboard.press("Tab")  # the role field: left empty
    page.keyboard.press("Tab")
    expect(page.locator("form.reassign button")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.locator("#task-panel [role=alert]")).to_contain_text("Reassigned to r3.")
    task.refresh_from_db()
    assert task.assignee is not None
    assert (task.assignee.username, task.assignee_role) == ("r3", None)

    # A name that is no member: the panel names it, nothing changes.
    tab_to(page, "input[name=to]")
    page.keyboard.type("ghost")
    page.keyboard.press("Enter")
    expect(page.locator("#task-panel [role=alert]")).to_contain_text(
        "No user 'ghost' in this organization."
    )
    task.refresh_from_db()
    assert task.assignee.username == "r3"


def test_the_inbox_views_and_search_with_the_keyboard(
    transactional_db, users, page_for, live_server
):
    wanted = waiting_task(users, "needle-42")
    other = waiting_task(users, "2.0")
    page = page_for(users["r1"])

    tab_to(page, "input[name=q]")
    page.keyboard.type("needle")
    page.keyboard.press("Enter")
    expect(page.locator(f'#inbox a[href="/tasks/{wanted.pk}/"]').first).to_be_visible()
    expect(page.locator(f'#inbox a[href="/tasks/{other.pk}/"]')).to_have_count(0)
    # The views' links come again with the search in them: tab to those, not the old ones.
    unassigned = page.locator("nav.tabs a[href*='view=unassigned']")
    expect(unassigned).to_have_attribute("href", re.compile("q=needle"))

    tab_to(page, "nav.tabs a[href*='view=unassigned']")
    page.keyboard.press("Enter")
    expect(page.locator("nav.tabs a[aria-current=page]")).to_have_text("Unassigned")
    # The search is kept across views.
    expect(page.locator("input[name=q]")).to_have_value("needle")
    expect(page.locator(f'#inbox a[href="/tasks/{wanted.pk}/"]').first).to_be_visible()
    expect(page.locator(f'#inbox a[href="/tasks/{other.pk}/"]')).to_have_count(0)
    tab_to(page, "nav.tabs a[href*='view=claimed']")
    page.keyboard.press("Enter")
    expect(page.locator("nav.tabs a[aria-current=page]")).to_have_text("Claimed by me")
    expect(page.locator("#inbox")).to_contain_text("Nothing to review.")
