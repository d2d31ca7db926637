"""Handoffs in a real browser: a parent waits for its child, then its starter settles one."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from approvals.models import HumanTask
from pipelines import services
from pipelines.models import HandoffEnvelope, Run
from tests.conftest import wait_finished, wait_for

pytestmark = pytest.mark.worker


def test_approve_the_child_then_the_parent_finishes_and_its_starter_acknowledges(
    worker, users, page_for, live_server
):
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "browser-child",
            "steps": [
                {"name": "check", "type": "approval", "config": {"assignee_role": "reviewers"}}
            ],
        },
    )
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "browser-parent",
            "steps": [
                {"name": "notify", "type": "handoff", "config": {"pipeline": "browser-child"}},
                {
                    "name": "ship",
                    "type": "handoff",
                    "config": {"pipeline": "browser-child", "wait": True},
                },
            ],
        },
    )
    parent = services.run_start(pipeline="browser-parent", inputs={}, actor=users["starter"])
    wait_for(lambda: HumanTask.objects.filter(status="open").count() == 2, message="two tasks")
    waited = HandoffEnvelope.objects.get(origin_run=parent, origin_step="ship").child_run

    reviewer = page_for(users["r1"])
    reviewer.goto(f"{live_server.url}/runs/{waited.pk}/")
    expect(reviewer.locator("#handoffs")).to_contain_text(f"Handed off by run #{parent.pk}")
    task = HumanTask.objects.get(run=waited)
    reviewer.goto(f"{live_server.url}/tasks/{task.pk}/")
    reviewer.get_by_role("button", name="Approve").click()
    expect(reviewer.locator("#task-panel")).to_contain_text("by r1")
    assert wait_finished(parent).status == Run.Status.SUCCEEDED

    starter = page_for(users["starter"])
    starter.goto(f"{live_server.url}/runs/{parent.pk}/")
    handoffs = starter.locator("#handoffs")
    expect(handoffs.locator("table.children")).to_contain_text("browser-child")
    notify = HandoffEnvelope.objects.get(origin_run=parent, origin_step="notify")
    row = handoffs.locator(f"#handoff-{notify.pk}")
    expect(row).to_contain_text("accepted")
    row.locator("input[name=decision]").fill("seen by the release desk")
    row.get_by_role("button", name="Acknowledge").click()
    expect(handoffs.locator(f"#handoff-{notify.pk}")).to_contain_text("acknowledged")
    expect(handoffs).to_contain_text("seen by the release desk")
    # The waited-for handoff was settled by the step itself.
    expect(handoffs.get_by_role("button", name="Acknowledge")).to_have_count(0)
    notify.refresh_from_db()
    assert notify.decision == "seen by the release desk"
    assert notify.acknowledged_by == users["starter"]
