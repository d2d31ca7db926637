"""Deciding with the keyboard alone, and the shortcuts that make a long queue fast."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from approvals.models import Decision, HumanTask
from pipelines import services
from tests.approvals.conftest import drive, open_task
from tests.e2e.pagecheck import focus_is_visible, tab_to
from tests.web.conftest import gate_pipeline


@pytest.fixture
def queue(users: dict[str, Any]) -> list[HumanTask]:
    """Three open approvals for the reviewers, oldest first."""
    gate_pipeline("release")
    return [
        open_task(
            drive(
                services.run_start(
                    pipeline="release", inputs={"version": f"1.{n}"}, actor=users["starter"]
                )
            )
        )
        for n in range(3)
    ]


def inbox_order(page: Page) -> list[str]:
    return page.locator("#inbox tbody tr").evaluate_all("rows => rows.map(r => r.dataset.taskUrl)")


def leave_the_field(page: Page) -> None:
    """Put the focus back on the page, as Escape then Tab away or a click on the text would."""
    page.evaluate("() => document.activeElement.blur()")


def test_tab_to_approve_and_press_enter(page_for: Any, users: dict, live_server: Any, queue):
    task = queue[0]
    page = page_for(users["r1"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")

    tab_to(page, "#task-panel button.primary")
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(page.locator("#task-panel")).to_contain_text("by r1")
    task.refresh_from_db()
    assert task.status == HumanTask.Status.COMPLETED
    assert Decision.objects.get(task=task).user == users["r1"]


def test_j_and_k_choose_a_row_and_o_opens_it(page_for: Any, users: dict, live_server: Any, queue):
    page = page_for(users["r1"])
    order = inbox_order(page)
    assert len(order) == 3

    page.keyboard.press("j")
    page.keyboard.press("j")
    selected = page.locator("#inbox tbody tr.selected")
    expect(selected).to_have_count(1)
    expect(selected).to_have_attribute("data-task-url", order[1])
    assert page.evaluate("() => document.activeElement.classList.contains('task-link')")
    assert focus_is_visible(page)
    page.keyboard.press("k")
    expect(selected).to_have_attribute("data-task-url", order[0])
    page.keyboard.press("k")  # stays on the first row
    expect(selected).to_have_attribute("data-task-url", order[0])

    page.keyboard.press("j")
    page.keyboard.press("o")
    expect(page).to_have_url(f"{live_server.url}{order[1]}")

    page.go_back()
    page.keyboard.press("j")
    page.keyboard.press("Enter")  # the chosen row's link has the focus
    expect(page).to_have_url(f"{live_server.url}{order[0]}")


def test_a_moves_to_approve_and_enter_decides_but_typing_a_does_not(
    page_for: Any, users: dict, live_server: Any, queue
):
    task = queue[0]
    page = page_for(users["r1"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")

    comment = page.locator("form.decision textarea[name=comment]").first
    comment.click()
    page.keyboard.type("a careful look: all good")
    expect(comment).to_have_value("a careful look: all good")
    page.keyboard.press("Control+a")  # selects the text, shortcuts or not
    expect(page.locator("#task-panel button.primary")).not_to_be_focused()
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN

    leave_the_field(page)
    page.keyboard.press("a")
    expect(page.get_by_role("button", name="Approve")).to_be_focused()
    # Moving the focus decides nothing: the button still has to be pressed.
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    page.keyboard.press("Enter")
    expect(page.locator("#task-panel")).to_contain_text("by r1")
    task.refresh_from_db()
    assert task.status == HumanTask.Status.COMPLETED
    assert Decision.objects.get(task=task).comment == "a careful look: all good"


def test_r_moves_to_the_reason_and_reject_still_needs_its_button(
    page_for: Any, users: dict, live_server: Any, queue
):
    task = queue[0]
    page = page_for(users["r1"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")

    page.keyboard.press("r")
    reason = page.locator('form[action$="/reject/"] textarea')
    expect(reason).to_be_focused()
    page.keyboard.type("r is for the reason, not a second reject")
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Reject")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#task-panel")).to_contain_text("by r1")
    task.refresh_from_db()
    assert task.status == HumanTask.Status.REJECTED


def test_n_and_p_follow_the_inbox_and_u_opens_the_run(
    page_for: Any, users: dict, live_server: Any, queue
):
    page = page_for(users["r1"])
    order = inbox_order(page)
    page.goto(f"{live_server.url}{order[0]}")

    page.keyboard.press("n")
    expect(page).to_have_url(f"{live_server.url}{order[1]}")
    page.keyboard.press("n")
    expect(page).to_have_url(f"{live_server.url}{order[2]}")
    page.keyboard.press("p")
    expect(page).to_have_url(f"{live_server.url}{order[1]}")

    task = HumanTask.objects.get(pk=int(order[1].strip("/").split("/")[-1]))
    page.keyboard.press("u")
    expect(page).to_have_url(f"{live_server.url}/runs/{task.run_id}/")
    page.go_back()
    page.keyboard.press("g")
    page.keyboard.press("r")
    expect(page).to_have_url(f"{live_server.url}/runs/{task.run_id}/")

    # From the inbox, u opens the chosen row's run.
    page.goto(f"{live_server.url}/")
    page.keyboard.press("j")
    page.keyboard.press("u")
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))


def test_question_mark_lists_the_shortcuts_in_a_dialog_that_keeps_the_focus(
    page_for: Any, users: dict, live_server: Any, queue
):
    page = page_for(users["r1"])
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_hidden()

    page.keyboard.press("?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("next / previous task")
    for _ in range(4):
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.closest('dialog') !== null")
        page.keyboard.press("Shift+Tab")
        assert page.evaluate("() => document.activeElement.closest('dialog') !== null")
        page.keyboard.press("Tab")
    # While it is open, the shortcuts sleep: j does not move the inbox behind it.
    page.keyboard.press("j")
    expect(page.locator("#inbox tr.selected")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # The header's button opens it too, for those who do not know the key.
    page.get_by_role("button", name="Keyboard shortcuts").click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
