"""Big pipelines in a browser: a 30-wide fan-out as a group, a 25-step chain, the timeline."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from pipelines import services
from pipelines.models import Run, StepRun
from tests.approvals.conftest import drive
from tests.e2e.pagecheck import PHONE, focus_is_visible, serious_violations, sideways_scroll, tab_to

WIDTH = 30
LENGTH = 25
GATE = 15  # the chain's step that waits for a person


def fan_out_run(users: dict[str, Any]) -> Run:
    """start → part-00 … part-29 → join: 12 parts done, the others queued."""
    parts = [f"part-{i:02d}" for i in range(WIDTH)]
    steps: list[dict[str, Any]] = [{"name": "start", "type": "noop"}]
    steps += [{"name": p, "type": "noop", "after": ["start"]} for p in parts]
    steps.append({"name": "join", "type": "noop", "after": parts})
    services.pipeline_create(member_role="starter", spec={"name": "fan", "steps": steps})
    run = services.run_start(pipeline="fan", inputs={}, actor=users["starter"])
    services.run_advance(run_id=run.pk)
    (start,) = StepRun.objects.filter(run=run, status="queued")
    services.step_execute(step_run_id=start.pk)
    queued = StepRun.objects.filter(run=run, status="queued").order_by("step_name")
    for step in list(queued)[:12]:
        services.step_execute(step_run_id=step.pk)
    return run


def chain_run(users: dict[str, Any]) -> Run:
    """s00 → … → s24, whose s15 waits for a reviewer."""
    steps: list[dict[str, Any]] = []
    for i in range(LENGTH):
        step: dict[str, Any] = {"name": f"s{i:02d}", "type": "noop"}
        if i == GATE:
            step.update(type="approval", config={"assignee_role": "reviewers"})
        if i:
            step["after"] = [f"s{i - 1:02d}"]
        steps.append(step)
    services.pipeline_create(member_role="starter", spec={"name": "chain", "steps": steps})
    run = drive(services.run_start(pipeline="chain", inputs={}, actor=users["starter"]))
    assert run.status == Run.Status.WAITING
    return run


def checked(page: Any, live_server: Any) -> None:
    assert serious_violations(page, live_server.url) == []
    page.set_viewport_size(PHONE)
    assert sideways_scroll(page) == ""


@pytest.mark.django_db(transaction=True)
def test_a_wide_fan_out_is_a_group_that_opens_with_the_keyboard(users, page_for, live_server):
    run = fan_out_run(users)
    page = page_for(users["starter"])
    page.goto(f"{live_server.url}/runs/{run.pk}/")

    group = page.locator("svg.dag g.group")
    expect(group).to_have_count(1)
    expect(group.locator("title")).to_have_text(
        "30 steps: 12 succeeded, 18 queued (part-00 … part-29)"
    )
    expect(group.locator("rect.bar")).to_have_count(2)
    height = page.locator("svg.dag").evaluate("svg => svg.getBoundingClientRect().height")
    assert height <= 400
    expect(page.locator("#run-timeline svg.timeline")).to_be_visible()
    expect(page.locator("#run-timeline .tl-row")).to_have_count(1 + WIDTH)  # queued ones too
    expect(page.locator("#run-timeline .legend")).to_contain_text("waiting for people")

    tab_to(page, "a.group-toggle")
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/runs/{run.pk}/?expand=part-00#group-part-00")
    expect(page.locator("svg.dag g.group.open g.node")).to_have_count(WIDTH)
    # The page refreshes every 3 s: the group stays open through it.
    with page.expect_response(lambda r: "part=live" in r.url and "expand=part-00" in r.url):
        pass
    expect(page.locator("svg.dag g.group.open g.node")).to_have_count(WIDTH)
    expect(page.locator("svg.dag g[data-step=part-29]")).to_have_class("node st-queued")
    checked(page, live_server)

    # The Hide link keeps the focus through a refresh, and closes the group.
    page.set_viewport_size({"width": 1280, "height": 900})
    tab_to(page, "a.group-toggle")
    with page.expect_response(lambda r: "part=live" in r.url):
        pass
    page.wait_for_timeout(300)
    hide = page.locator("a.group-toggle")
    expect(hide).to_be_focused()
    expect(hide).to_have_attribute("aria-label", re.compile(r"^Hide the 30 steps"))
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/runs/{run.pk}/?#group-part-00")
    expect(page.locator("svg.dag g.group.open")).to_have_count(0)


@pytest.mark.django_db(transaction=True)
def test_a_long_chain_wraps_and_keeps_its_waiting_step_in_view(users, page_for, live_server):
    run = chain_run(users)
    page = page_for(users["starter"])
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/runs/{run.pk}/")

    wrap = page.locator("#run-live .dag-wrap").first
    waiting = wrap.locator(f"g[data-step=s{GATE}]")
    expect(waiting).to_have_class("node st-waiting")
    width = page.locator("svg.dag").evaluate("svg => svg.getBoundingClientRect().width")
    assert width <= 1300

    def in_view() -> bool:
        return bool(
            waiting.evaluate(
                """(node) => {
                  const box = node.getBoundingClientRect();
                  const frame = node.closest(".dag-wrap").getBoundingClientRect();
                  return box.left >= frame.left && box.right <= frame.right;
                }"""
            )
        )

    assert in_view()
    # And after a refresh of the live part.
    with page.expect_response(lambda r: "part=live" in r.url):
        pass
    page.wait_for_timeout(300)
    assert in_view()
    expect(page.locator("#run-timeline svg .tl-human")).to_have_count(1)
    # The timeline's table, opened from the keyboard, stays open through a refresh.
    tab_to(page, "#run-timeline-table summary")
    page.keyboard.press("Enter")
    table = page.locator("#run-timeline-table table")
    expect(table).to_be_visible()
    with page.expect_response(lambda r: "part=live" in r.url):
        pass
    page.wait_for_timeout(300)
    expect(table).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(GATE + 1)
    expect(table).to_contain_text("waiting for people")
    page.set_viewport_size({"width": 1280, "height": 900})
    checked(page, live_server)
