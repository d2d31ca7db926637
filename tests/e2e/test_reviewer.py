"""A reviewer in a real browser: inbox, decisions, live run page, a lost race."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from approvals.models import HumanTask
from pipelines import services
from pipelines.models import Run
from tests.conftest import wait_for

pytestmark = pytest.mark.worker


def gated_run(users: dict, name: str, gate: dict) -> Run:
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": name,
            "steps": [
                {"name": "build", "type": "noop"},
                {**gate, "name": "review", "after": ["build"]},
                {"name": "ship", "type": "sleep", "after": ["review"], "config": {"seconds": 1}},
            ],
        },
    )
    run = services.run_start(pipeline=name, inputs={"version": "1.0"}, actor=users["starter"])
    wait_for(lambda: HumanTask.objects.filter(run=run, status="open").exists(), message="the task")
    return run


def test_approve_from_the_inbox_and_watch_the_run_finish(worker, users, page_for, live_server):
    run = gated_run(
        users, "browser-approve", {"type": "approval", "config": {"assignee_role": "reviewers"}}
    )
    page = page_for(users["r1"])

    expect(page.locator("#inbox table")).to_contain_text("review")
    page.get_by_role("link", name="Open").first.click()
    expect(page).to_have_url(re.compile(r"/tasks/\d+/$"))
    page.fill("form.decision textarea[name=comment] >> nth=0", "looks good")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#task-panel")).to_contain_text("by r1")

    page.goto(f"{live_server.url}/runs/{run.pk}/")
    # The run page polls while the run moves: no reload, it turns succeeded by itself.
    expect(page.locator(".run-status .pill").first).to_have_text("succeeded", timeout=20_000)


def test_an_input_form_shows_field_errors_then_accepts(worker, users, page_for, live_server):
    form = {
        "type": "object",
        "required": ["title", "words"],
        "properties": {
            "title": {"type": "string", "minLength": 3, "title": "Title"},
            "words": {"type": "integer", "minimum": 1, "title": "Words"},
        },
    }
    run = gated_run(
        users, "browser-input", {"type": "input", "config": {"assignee": "r2", "form_schema": form}}
    )
    task = HumanTask.objects.get(run=run)
    page = page_for(users["r2"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")

    page.fill("#f-title", "ab")
    page.fill("#f-words", "0")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator(".field-error").first).to_be_visible()
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN

    page.fill("#f-title", "Release notes")
    page.fill("#f-words", "120")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#task-panel")).to_contain_text("by r2")
    task.refresh_from_db()
    assert task.status == HumanTask.Status.COMPLETED


def test_two_reviewers_decide_at_once_and_the_second_sees_who_won(
    worker, users, page_for, live_server
):
    run = gated_run(
        users, "browser-race", {"type": "approval", "config": {"assignee_role": "reviewers"}}
    )
    task = HumanTask.objects.get(run=run)
    first, second = page_for(users["r1"]), page_for(users["r2"])
    for page in (first, second):
        page.goto(f"{live_server.url}/tasks/{task.pk}/")

    first.get_by_role("button", name="Approve").click()
    expect(first.locator("#task-panel")).to_contain_text("by r1")
    second.fill("form.decision textarea[name=comment] >> nth=1", "too risky")
    second.get_by_role("button", name="Reject").click()

    expect(second.locator("#task-panel [role=alert]")).to_contain_text("already decided by r1 at")
    task.refresh_from_db()
    assert task.status == HumanTask.Status.COMPLETED


def test_reject_needs_a_reason_then_ends_the_run(worker, users, page_for, live_server):
    run = gated_run(
        users, "browser-reject", {"type": "approval", "config": {"assignee_role": "reviewers"}}
    )
    task = HumanTask.objects.get(run=run)
    page = page_for(users["r3"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    reject = page.locator("form.decision", has=page.get_by_role("button", name="Reject"))
    reason = reject.locator("textarea[name=comment]")

    posted = []
    page.on("request", lambda r: posted.append(r.url) if "/reject/" in r.url else None)

    # An empty reason: the browser's `required` check stops the submit (no request goes out)
    # and puts the focus on the field, which reports itself invalid.
    reject.get_by_role("button", name="Reject").click()
    expect(reason).to_be_focused()
    expect(reject.locator("textarea[name=comment]:invalid")).to_be_visible()
    assert reason.evaluate("el => el.validity.valueMissing") is True
    assert reason.evaluate("el => el.validationMessage")
    assert reject.evaluate("form => form.checkValidity()") is False
    expect(page.locator("#task-panel .field-error")).to_have_count(0)

    # Blanks pass `required` but not the server: the field error comes back in the panel.
    reason.fill("   ")
    reject.get_by_role("button", name="Reject").click()
    expect(page.locator("#task-panel [role=alert]")).to_contain_text("Say why you reject.")
    expect(page.locator("#task-panel .field-error")).to_have_text("required")
    assert len(posted) == 1, posted  # only the blank reason was posted, not the empty one
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN

    page.locator(
        "#task-panel form.decision", has=page.get_by_role("button", name="Reject")
    ).locator("textarea[name=comment]").fill("the changelog is wrong")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#task-panel [role=alert]")).to_have_text("Rejected: the run ends.")
    expect(page.locator("#task-panel")).to_contain_text("Rejected by r3")
    expect(page.locator("#task-panel .history")).to_contain_text("the changelog is wrong")

    page.get_by_role("link", name="Follow the run →").click()
    expect(page).to_have_url(f"{live_server.url}/runs/{run.pk}/")
    expect(page.locator(".run-status .pill").first).to_have_text("rejected", timeout=20_000)
    task.refresh_from_db()
    assert task.status == HumanTask.Status.REJECTED


def test_roll_back_then_approve_the_new_generation(worker, users, page_for, live_server):
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "browser-rollback",
            "steps": [
                {"name": "build", "type": "noop"},
                {"name": "draft", "type": "noop", "after": ["build"]},
                {
                    "name": "review",
                    "type": "approval",
                    "after": ["draft"],
                    "config": {"assignee_role": "reviewers"},
                },
                {"name": "ship", "type": "sleep", "after": ["review"], "config": {"seconds": 1}},
            ],
        },
    )
    run = services.run_start(pipeline="browser-rollback", inputs={}, actor=users["starter"])
    first = wait_for(
        lambda: HumanTask.objects.filter(run=run, status="open").first(), message="the task"
    )
    page = page_for(users["r1"])
    page.goto(f"{live_server.url}/tasks/{first.pk}/")

    page.get_by_text("Roll back…").click()
    rollback = page.locator("#task-panel details.decision form")
    expect(rollback).to_be_visible()
    rollback.locator("select[name=to_step]").select_option("build")
    rollback.locator("textarea[name=comment]").fill("rebuild with the fix")
    rollback.get_by_role("button", name="Roll back").click()
    panel = page.locator("#task-panel")
    expect(panel.locator("[role=alert]")).to_have_text("Rolled back to build.")
    expect(panel).to_contain_text("Rolled back to build by r1")
    expect(panel).not_to_contain_text("Cancelled")
    expect(panel.locator(".history")).to_contain_text("rollback")
    expect(panel.locator(".history code")).to_have_text("build")
    expect(panel.locator(".history")).to_contain_text("rebuild with the fix")

    # The inbox is open before the new task exists; it polls and shows it by itself.
    page.goto(f"{live_server.url}/")
    second = wait_for(
        lambda: HumanTask.objects.filter(run=run, status="open").first(), message="the new task"
    )
    assert second.pk != first.pk
    assert second.generation == 2
    expect(page.locator(f"#inbox a[href='/tasks/{second.pk}/']").first).to_be_visible(
        timeout=20_000
    )
    expect(page.locator(f"#inbox a[href='/tasks/{first.pk}/']")).to_have_count(0)

    # Watch the run in a second tab, opened before the approval: no reload there.
    watcher = page.context.new_page()
    watcher.goto(f"{live_server.url}/runs/{run.pk}/")
    expect(watcher.locator(".run-status")).to_contain_text("generation 2")
    expect(watcher.locator(".run-status .pill").first).not_to_have_text("succeeded")

    page.locator(f"#inbox a.button[href='/tasks/{second.pk}/']").click()
    expect(page).to_have_url(f"{live_server.url}/tasks/{second.pk}/")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#task-panel")).to_contain_text("Completed by r1")

    expect(watcher.locator(".run-status .pill").first).to_have_text("succeeded", timeout=20_000)
    expect(watcher.locator(".run-status")).to_contain_text("generation 2")
    rows = watcher.locator("#run-live table.grid tbody tr")
    expect(rows).to_have_count(4)
    for step in ("build", "draft", "review", "ship"):
        row = rows.filter(has=watcher.locator("code", has_text=re.compile(rf"^{step}$")))
        expect(row.locator("td").nth(1)).to_have_text("succeeded")
        expect(row.locator("td").nth(2)).to_have_text("2")  # the Generation column
