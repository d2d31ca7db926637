"""The task page's content (instructions, context) and the run page's outputs, as served."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from approvals import services as approvals
from pipelines import services
from pipelines.errors import Conflict
from pipelines.models import AuditEntry, HandoffEnvelope, Run, StepRun
from tests.approvals.conftest import drive, open_task
from tokens.services import token_create

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}

INSTRUCTIONS = (
    "## Release {{ inputs.version }}\n\n"
    "Check [the build]({{ outputs.build.inputs.site }}) and {{ inputs.nowhere }}.\n\n"
    "<script>alert('instructions')</script> <img src=x onerror=alert(2)> [x](javascript:alert(3))"
)
ECHO = "tests.pipelines.callables.echo"
EVIL = "**1.0** <script>alert('input')</script> [click](javascript:alert(4))"


def content_run(starter: Any, make_pipeline: Any, **inputs: Any) -> Run:
    """A run waiting at `review`, whose `build` echoed the run's inputs as its output."""
    name = make_pipeline(
        [
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
        ]
    )
    values = {"version": EVIL, "site": "https://ci.example/7", "notes": "long " * 60, **inputs}
    run = drive(services.run_start(pipeline=name, inputs=values, actor=starter))
    assert run.status == Run.Status.WAITING
    return run


def task_page(client: Any, task_id: int, **params: Any) -> Any:
    return client.get(reverse("task", args=[task_id]), params, **(HX if params else {}))


def test_instructions_are_markdown_with_the_runs_values_escaped(client, users, make_pipeline):
    run = content_run(users["starter"], make_pipeline)
    client.force_login(users["r1"])

    html = task_page(client, open_task(run).pk).content.decode()

    instructions = html.split('<div class="markdown">')[1].split("</div>")[0]
    assert "<h2>Release **1.0** &lt;script&gt;alert('input')&lt;/script&gt;" in instructions
    assert '<a href="https://ci.example/7" rel="nofollow noopener noreferrer">the build</a>' in (
        instructions
    )
    assert "[missing: inputs.nowhere]" in instructions
    assert "&lt;script&gt;alert('instructions')" in instructions
    assert "<script" not in instructions
    assert "<img" not in instructions
    assert 'href="javascript' not in instructions.lower()
    assert "[x](javascript:alert(3))" in instructions  # refused as a link, left as text
    assert "<strong>" not in instructions


def test_context_is_a_key_value_table(client, users, make_pipeline):
    run = content_run(users["starter"], make_pipeline)
    client.force_login(users["r1"])

    html = task_page(client, open_task(run).pk).content.decode()

    assert 'role="region" aria-label="Run inputs"' in html
    assert '<th scope="row"><code>site</code></th>' in html
    # The upstream output's nested objects read as dotted keys.
    assert 'aria-label="Output of build"' in html
    assert "<code>inputs.version</code>" in html
    # A long value is cut, the whole of it one click away.
    assert '<details class="kv-full"><summary>Whole value</summary>' in html
    assert "&lt;script&gt;alert(&#x27;input&#x27;)" in html
    assert "<script>alert('input')" not in html


def test_a_placeholder_reads_only_what_the_step_shares(client, users, make_pipeline):
    name = make_pipeline(
        [
            {
                "name": "review",
                "type": "approval",
                "config": {
                    "assignee_role": "reviewers",
                    "instructions": "v={{ inputs.version }} s={{ inputs.secret }}",
                    "context": {"inputs": ["version"]},
                },
            }
        ]
    )
    run = services.run_start(
        pipeline=name, inputs={"version": "2", "secret": "hunter2"}, actor=users["starter"]
    )
    run = drive(run)
    client.force_login(users["r1"])

    html = task_page(client, open_task(run).pk).content.decode()

    assert "v=2 s=[missing: inputs.secret]" in html
    assert "hunter2" not in html


def test_the_live_part_follows_a_decision_made_elsewhere_and_then_stops(
    client, users, make_pipeline
):
    run = content_run(users["starter"], make_pipeline)
    task = open_task(run)
    client.force_login(users["r2"])
    page = task_page(client, task.pk).content.decode()
    assert f'hx-get="{reverse("task", args=[task.pk])}?part=live" hx-trigger="every 5s"' in page

    open_now = task_page(client, task.pk, part="live")
    assert open_now.status_code == 200
    assert "Approve" in open_now.content.decode()

    approvals.task_approve(task_id=task.pk, user=users["r1"])
    decided = task_page(client, task.pk, part="live")
    html = decided.content.decode()

    # htmx stops polling on 286: this answer is the last, and it shows the decision.
    assert decided.status_code == 286
    assert "Completed" in html
    assert "r1" in html
    assert '<div id="task-head" hx-swap-oob="innerHTML">' in html
    assert 'class="pill st-completed">completed<' in html
    assert '<div id="task-picture" hx-swap-oob="innerHTML">' in html
    assert "Approve</button>" not in html
    # A page opened on a decided task does not poll at all.
    assert "?part=live" not in task_page(client, task.pk).content.decode()


@pytest.mark.parametrize("rows", [1, 10])
def test_task_live_part_queries_do_not_grow(
    client, users, make_pipeline, django_assert_max_num_queries, rows
):
    run = content_run(users["starter"], make_pipeline, items=list(range(rows * 20)))
    task = open_task(run)
    client.force_login(users["r1"])
    task_page(client, task.pk, part="live")  # the pipeline spec is cached after this
    # session, user, memberships, row-level security's enter and leave, the task with its
    # run, its decisions, the guards' checks (an out-of-office delegation among them) and
    # the picture's steps: however big the context, the same few.
    with django_assert_max_num_queries(12):
        task_page(client, task.pk, part="live")


# --- the run page's outputs -----------------------------------------------------------


def test_the_run_page_shows_each_succeeded_steps_output_and_the_runs(
    client, users, make_pipeline, django_assert_max_num_queries
):
    run = content_run(users["starter"], make_pipeline)
    client.force_login(users["starter"])
    url = reverse("run", args=[run.pk])

    live = client.get(url, {"part": "live"}, **HX).content.decode()
    build = StepRun.objects.get(run=run, step_name="build")
    assert f'<a href="#output-{build.pk}">output</a>' in live
    assert f'<details class="step-output" id="output-{build.pk}" hx-preserve>' in live
    assert "<code>inputs.site</code>" in live
    assert "<script>alert('input')" not in live
    assert 'id="run-output"' not in live

    approvals.task_approve(task_id=open_task(run).pk, user=users["r1"])
    run = drive(run)
    assert run.status == Run.Status.SUCCEEDED
    live = client.get(url, {"part": "live"}, **HX).content.decode()
    review = StepRun.objects.get(run=run, step_name="review")
    assert f'id="output-{review.pk}"' in live
    assert f"<code>{'decision'}</code>" in live
    if run.output is not None:
        assert 'id="run-output"' in live


# --- a handoff a step waits on ---------------------------------------------------------


def waiting_handoff(make_pipeline: Any, starter: Any) -> tuple[Run, HandoffEnvelope]:
    child = make_pipeline(
        [{"name": "check", "type": "approval", "config": {"assignee_role": "reviewers"}}]
    )
    name = make_pipeline(
        [{"name": "hand", "type": "handoff", "config": {"pipeline": child, "wait": True}}]
    )
    run = drive(services.run_start(pipeline=name, inputs={}, actor=starter))
    assert run.status == Run.Status.WAITING
    return run, HandoffEnvelope.objects.get(origin_run=run)


def test_a_handoff_a_step_waits_on_offers_nothing_to_decide(client, users, make_pipeline):
    run, envelope = waiting_handoff(make_pipeline, users["starter"])
    client.force_login(users["starter"])

    html = client.get(reverse("run", args=[run.pk])).content.decode()

    child = reverse("run", args=[envelope.child_run_id])
    assert f'Waits for <a href="{child}">child run #{envelope.child_run_id}</a>' in html
    assert "Acknowledge</button>" not in html
    assert 'name="decision"' not in html


def test_acknowledging_a_handoff_a_step_waits_on_is_refused_and_audited(
    client, users, make_pipeline
):
    run, envelope = waiting_handoff(make_pipeline, users["starter"])

    with pytest.raises(Conflict, match=f"settles when run {envelope.child_run_id} finishes"):
        services.acknowledge_handoff(envelope_id=envelope.pk, decision="ok", actor=users["starter"])

    client.force_login(users["starter"])
    url = reverse("handoff-acknowledge", args=[envelope.pk])
    response = client.post(url, {"decision": "done"}, **HX)
    assert response.status_code == 409
    assert "nothing to acknowledge yet" in response.content.decode()

    envelope.refresh_from_db()
    assert envelope.acknowledged_at is None
    refused = AuditEntry.objects.filter(run=run, event="run.refused").order_by("seq")
    assert [e.data for e in refused] == [
        {"action": "acknowledge", "envelope": envelope.pk, "child_run": envelope.child_run_id}
    ] * 2
    assert refused[0].actor == users["starter"]
    # The child's end still settles it, and the step ends as the child did.
    child = drive(Run.objects.get(handoff=envelope))
    approvals.task_approve(task_id=open_task(child).pk, user=users["r1"])
    drive(child)
    services.handoff_settle(child_run_id=child.pk)
    envelope.refresh_from_db()
    assert envelope.decision == {"status": "succeeded"}
    assert StepRun.objects.get(run=run, step_name="hand").status == StepRun.Status.SUCCEEDED


def test_the_api_refuses_it_too(users, make_pipeline):
    run, envelope = waiting_handoff(make_pipeline, users["starter"])
    api = APIClient()
    _, key = token_create(user=users["starter"], name="tests")
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    response = api.post(
        f"/api/v1/handoffs/{envelope.pk}/acknowledge/", {"decision": "done"}, format="json"
    )

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert f"run {envelope.child_run_id} finishes" in error["message"]
    assert AuditEntry.objects.filter(run=run, event="run.refused").count() == 1
    assert AuditEntry.objects.filter(run=run, event="handoff.acknowledged").count() == 0
