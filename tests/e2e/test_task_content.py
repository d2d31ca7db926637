"""What a reviewer reads: Markdown instructions with the run's values, context tables, outputs."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines import services
from pipelines.models import HandoffEnvelope, Run, StepRun
from tests.conftest import wait_finished, wait_for
from tests.e2e.pagecheck import DESKTOP, PHONE, serious_violations, sideways_scroll

pytestmark = pytest.mark.worker

INSTRUCTIONS = (
    "## Release {{ inputs.version }}\n\n"
    "Check [the build]({{ outputs.build.inputs.site }}) and **every** note.\n\n"
    "| region | hosts |\n|---|---|\n| {{ inputs.target.region }} | {{ inputs.target.hosts }} |\n\n"
    "Ticket: {{ inputs.ticket }}\n\n"
    '<script>window.pwned = "script"</script> <img src=x onerror="window.pwned = \'img\'">'
    " [run me](javascript:window.pwned='link')"
)
# A run input an attacker controls: Markdown and HTML that must stay text.
EVIL = (
    "1.0 <img src=x onerror=\"window.pwned='input'\"> <script>window.pwned='input'</script>"
    " [click](javascript:window.pwned='input') **loud**"
)


def content_run(users: dict[str, Any], name: str) -> tuple[Run, HumanTask]:
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": name,
            "steps": [
                {
                    "name": "build",
                    "type": "python",
                    "config": {"callable": "tests.pipelines.callables.echo"},
                },
                {
                    "name": "review",
                    "type": "approval",
                    "after": ["build"],
                    "config": {"assignee_role": "reviewers", "instructions": INSTRUCTIONS},
                },
                {"name": "ship", "type": "noop", "after": ["review"]},
            ],
        },
    )
    inputs = {
        "version": EVIL,
        "site": "https://ci.example/builds/7",
        "target": {"region": "eu-west", "hosts": ["web-1", "web-2"]},
        "notes": "A long note. " * 40,
    }
    run = services.run_start(pipeline=name, inputs=inputs, actor=users["starter"])
    wait_for(lambda: HumanTask.objects.filter(run=run, status="open").exists(), message="a task")
    return run, HumanTask.objects.get(run=run)


def checked(page: Any, origin: str) -> None:
    """No serious axe violation, at a desk's width and a phone's, and no sideways scroll."""
    assert serious_violations(page, origin) == []
    page.set_viewport_size(PHONE)
    assert sideways_scroll(page) == ""
    assert serious_violations(page, origin) == []
    page.set_viewport_size(DESKTOP)


def test_instructions_render_as_markdown_with_values_and_a_malicious_input_stays_inert(
    worker, users, page_for, live_server
):
    _, task = content_run(users, "content-markdown")
    page = page_for(users["r1"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")

    instructions = page.locator(".instructions .markdown")
    heading = instructions.get_by_role("heading", level=2)
    expect(heading).to_contain_text("Release 1.0 <img src=x onerror=")
    expect(heading).to_contain_text("[click](javascript:window.pwned='input') **loud**")
    link = instructions.get_by_role("link", name="the build")
    expect(link).to_have_attribute("href", "https://ci.example/builds/7")
    expect(instructions.locator("strong")).to_have_text("every")
    expect(instructions.locator("table td").first).to_have_text("eu-west")
    expect(instructions.locator("table td").last).to_have_text('["web-1", "web-2"]')
    expect(instructions).to_contain_text("Ticket: [missing: inputs.ticket]")
    expect(instructions).to_contain_text('<script>window.pwned = "script"</script>')
    # Nothing ran, nothing was made into an element or a link.
    expect(instructions.locator("img, script, iframe")).to_have_count(0)
    expect(instructions.get_by_role("link")).to_have_count(1)
    expect(page.locator('a[href^="javascript"], [onerror]')).to_have_count(0)
    assert page.evaluate("window.pwned") is None
    checked(page, live_server.url)


def test_the_context_reads_as_tables_and_a_long_value_opens_whole(
    worker, users, page_for, live_server
):
    _, task = content_run(users, "content-context")
    page = page_for(users["r1"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")

    inputs = page.get_by_role("region", name="Run inputs")
    expect(inputs.locator("tr", has_text="target.region")).to_contain_text("eu-west")
    expect(inputs.locator("tr", has_text="target.hosts")).to_contain_text("web-1, web-2")
    expect(inputs.locator("tr", has_text="version")).to_contain_text("<script>")
    build = page.get_by_role("region", name="Output of build")
    expect(build.locator("tr", has_text="inputs.site")).to_contain_text("https://ci.example")
    notes = inputs.locator("tr", has_text="notes")
    whole = notes.locator("details.kv-full")
    expect(whole.locator("pre")).not_to_be_visible()
    whole.locator("summary").click()
    expect(whole.locator("pre")).to_be_visible()
    expect(whole.locator("pre")).to_contain_text("A long note. " * 30)
    assert page.evaluate("window.pwned") is None
    checked(page, live_server.url)


def test_the_task_page_follows_a_decision_made_by_someone_else(
    worker, users, page_for, live_server
):
    run, task = content_run(users, "content-live")
    page = page_for(users["r2"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    head = page.locator("#task-head h1")
    expect(head.locator(".pill.st-open")).to_have_text("open")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    page.evaluate("window.fireflyNotReloaded = true")

    approvals.task_approve(task_id=task.pk, user=users["r1"], comment="looks right")

    panel = page.locator("#task-panel")
    expect(panel).to_contain_text("Completed by r1", timeout=15_000)
    expect(panel).to_contain_text("looks right")
    expect(head.locator(".st-open")).to_have_count(0)
    expect(head.locator(".pill").last).to_have_text("completed")
    expect(page.locator("#task-picture g[data-step=review]")).to_have_class(
        "node st-succeeded current"
    )
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    assert page.evaluate("window.fireflyNotReloaded === true")
    # That answer was the last: the page polls no more.
    polls: list[str] = []
    page.on(
        "request", lambda request: polls.append(request.url) if "part=live" in request.url else None
    )
    page.wait_for_timeout(6_000)
    assert polls == []
    wait_finished(run)


def test_the_task_page_keeps_a_comment_being_written(worker, users, page_for, live_server):
    _, task = content_run(users, "content-typing")
    page = page_for(users["r2"])
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    reason = page.locator("form.decision textarea[name=comment][required]")
    reason.fill("half a sentence")
    page.locator("h1").click()  # the cursor leaves the form, the text stays unsent

    page.wait_for_timeout(6_000)

    expect(reason).to_have_value("half a sentence")


def test_the_run_page_shows_step_outputs_and_the_runs_output(worker, users, page_for, live_server):
    run, task = content_run(users, "content-outputs")
    approvals.task_approve(task_id=task.pk, user=users["r1"], comment="ship it")
    run = wait_finished(run)
    assert run.status == Run.Status.SUCCEEDED
    page = page_for(users["starter"])
    page.goto(f"{live_server.url}/runs/{run.pk}/")

    build = StepRun.objects.get(run=run, step_name="build")
    output = page.locator(f"#output-{build.pk}")
    expect(output.get_by_role("region")).not_to_be_visible()
    page.locator("table.grid").get_by_role("link", name="output").first.click()
    table = output.get_by_role("region", name="Output of build")
    expect(table).to_be_visible()
    expect(table.locator("tr", has_text="inputs.target.region")).to_contain_text("eu-west")
    expect(table.locator("tr", has_text="inputs.version")).to_contain_text("<script>")
    review = page.locator("details.step-output", has_text="review")
    review.locator("summary").click()
    expect(review.get_by_role("row", name="comment ship it", exact=True)).to_be_visible()
    if run.output is not None:
        expect(page.locator("#run-output")).to_be_visible()
    assert page.evaluate("window.pwned") is None
    checked(page, live_server.url)


def test_a_handoff_waiting_for_its_child_offers_nothing_to_decide(
    worker, users, page_for, live_server
):
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "content-child",
            "steps": [
                {"name": "check", "type": "approval", "config": {"assignee_role": "reviewers"}}
            ],
        },
    )
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "content-parent",
            "steps": [
                {
                    "name": "ship",
                    "type": "handoff",
                    "config": {"pipeline": "content-child", "wait": True},
                }
            ],
        },
    )
    parent = services.run_start(pipeline="content-parent", inputs={}, actor=users["starter"])
    wait_for(lambda: HumanTask.objects.filter(status="open").exists(), message="the child task")
    envelope = HandoffEnvelope.objects.get(origin_run=parent)
    child = envelope.child_run
    assert child is not None

    page = page_for(users["starter"])
    page.goto(f"{live_server.url}/runs/{parent.pk}/")
    row = page.locator(f"#handoff-{envelope.pk}")
    expect(row).to_contain_text(f"Waits for child run #{child.pk}: settled when it finishes.")
    expect(row.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(row.locator("input[name=decision]")).to_have_count(0)
    checked(page, live_server.url)

    approvals.task_approve(task_id=HumanTask.objects.get(run=child).pk, user=users["r1"])
    assert wait_finished(parent).status == Run.Status.SUCCEEDED
    expect(row).to_contain_text("acknowledged", timeout=15_000)
    expect(row).not_to_contain_text("Waits for child run")
    row.get_by_role("link", name=f"#{child.pk}").click()
    expect(page.locator("h1")).to_contain_text(f"#{child.pk}")
