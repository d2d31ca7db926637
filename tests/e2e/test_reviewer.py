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
        spec={
            "name": name,
            "steps": [
                {"name": "build", "type": "noop"},
                {**gate, "name": "review", "after": ["build"]},
                {"name": "ship", "type": "sleep", "after": ["review"], "config": {"seconds": 1}},
            ],
        }
    )
    run = services.run_start(pipeline=name, inputs={"version": "1.0"}, actor=users["starter"])
    wait_for(lambda: HumanTask.objects.filter(run=run, status="open").exists(), message="the task")
    return run


def test_approve_from_the_inbox_and_watch_the_run_finish(worker, users, page_for, live_server):
    run = gated_run(
        users, "browser-approve", {"type": "approval", "config": {"assignee_role": "reviewers"}}
    )
    page = page_for(users["r1"])

    expect(page.locator("table")).to_contain_text("review")
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
