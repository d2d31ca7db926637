"""Nothing stale: the task page after a decision, a run page at its end, the badge and inbox."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines import services
from pipelines.models import Checkpoint, Run
from tests.conftest import wait_finished, wait_for

pytestmark = pytest.mark.worker


def gated(users: dict, name: str) -> Run:
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": name,
            "steps": [
                {"name": "build", "type": "noop"},
                {
                    "name": "review",
                    "type": "approval",
                    "after": ["build"],
                    "config": {"assignee_role": "reviewers"},
                },
                {"name": "ship", "type": "sleep", "after": ["review"], "config": {"seconds": 1}},
            ],
        },
    )
    return start(users, name)


def start(users: dict, name: str) -> Run:
    run = services.run_start(pipeline=name, inputs={}, actor=users["starter"])
    wait_for(lambda: HumanTask.objects.filter(run=run, status="open").exists(), message="a task")
    return run


def mark(page) -> None:
    """A value on the window that a reload would lose."""
    page.evaluate("window.fireflyNotReloaded = true")


def not_reloaded(page) -> bool:
    return bool(page.evaluate("window.fireflyNotReloaded === true"))


def test_approving_turns_the_header_picture_and_panel_without_a_reload(
    worker, users, page_for, live_server
):
    run = gated(users, "live-task")
    task = HumanTask.objects.get(run=run)
    page = page_for(users["r1"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    head, review = page.locator("#task-head h1"), page.locator("#task-picture g[data-step=review]")
    expect(head.locator(".pill.st-open")).to_have_text("open")
    expect(review).to_have_class("node st-waiting current")
    mark(page)

    page.get_by_role("button", name="Approve").click()

    expect(page.locator("#task-panel")).to_contain_text("Completed by r1")
    expect(head.locator(".pill").last).to_have_text("completed")
    expect(head.locator(".st-open")).to_have_count(0)
    expect(review).to_have_class("node st-succeeded current")
    assert not_reloaded(page)


def test_a_run_page_shows_the_finished_run_in_every_panel_then_stops_polling(
    worker, users, page_for, live_server
):
    run = gated(users, "live-run")
    page = page_for(users["starter"])
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    expect(page.locator(".run-status .pill").first).to_have_text("waiting")
    expect(page.locator("#audit")).to_contain_text("step.waiting")
    mark(page)
    polls: list[float] = []
    page.on("request", lambda r: polls.append(time.monotonic()) if "part=live" in r.url else None)

    task = HumanTask.objects.get(run=run)
    approvals.task_approve(task_id=task.pk, user=users["r2"], comment="ship it on Tuesday")
    run = wait_finished(run)
    assert run.status == Run.Status.SUCCEEDED

    expect(page.locator(".run-status .pill").first).to_have_text("succeeded", timeout=20_000)
    # The same answer brought the audit trail and the checkpoints: their final state.
    audit = page.locator("#audit")
    expect(audit).to_contain_text("run.finished")
    expect(audit.locator("tr", has_text="task.approved")).to_contain_text("ship it on Tuesday")
    final = Checkpoint.objects.filter(run=run).order_by("-seq").first()
    assert final is not None
    expect(page.locator("#checkpoints .seq").first).to_have_text(str(final.seq))
    expect(page.locator("#run-live")).to_contain_text("Nothing unsettled")

    # And then no more polling (the page polled every 3 s until then).
    assert polls, "the page never polled"
    finished_at = time.monotonic()
    page.wait_for_timeout(7_000)
    assert [t for t in polls if t > finished_at] == []
    assert not_reloaded(page)


def test_the_badge_and_the_inbox_show_the_same_count_at_each_refresh(
    worker, users, page_for, live_server
):
    gated(users, "live-inbox")
    page = page_for(users["r1"])
    rows = page.locator("#inbox a.button")
    expect(rows).to_have_count(1)
    expect(page.locator("#nav-count")).to_have_text("1")
    # After each swap of the inbox, note what the list and the badge say.
    page.evaluate(
        """() => {
          window.fireflySeen = [];
          document.body.addEventListener("htmx:afterSettle", () => {
            window.fireflySeen.push([
              document.querySelectorAll("#inbox a.button").length,
              document.getElementById("nav-count").textContent.trim(),
            ]);
          });
        }"""
    )

    start(users, "live-inbox")
    start(users, "live-inbox")

    expect(rows).to_have_count(3, timeout=20_000)
    expect(page.locator("#nav-count")).to_have_text("3")
    page.wait_for_timeout(5_500)  # one more refresh
    seen = page.evaluate("window.fireflySeen")
    assert seen, "the inbox never refreshed"
    assert all(str(listed) == badge for listed, badge in seen), seen
