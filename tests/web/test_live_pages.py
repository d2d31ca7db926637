"""Live parts of the run and task pages: every panel refreshed, the last refresh, waits."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines.models import AuditEntry, Checkpoint, Run, StepRun
from tests.approvals.conftest import drive, open_task
from tests.web.conftest import waiting_run

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def live(client: Any, run: Run, **params: Any) -> str:
    response = client.get(reverse("run", args=[run.pk]), {"part": "live", **params}, **HX)
    assert response.status_code == 200
    return str(response.content.decode())


def test_the_live_part_brings_the_audit_trail_and_checkpoints_while_it_polls(client, users):
    run = waiting_run(users["starter"])
    client.force_login(users["starter"])
    html = live(client, run)
    assert 'hx-trigger="every 3s"' in html
    assert '<div id="audit" hx-swap-oob="innerHTML">' in html
    assert '<div id="checkpoints" hx-swap-oob="innerHTML">' in html
    assert "step.waiting" in html
    assert html.count('<li><span class="seq">') == Checkpoint.objects.filter(run=run).count()


def test_the_answer_that_finds_the_run_finished_is_final_and_complete(client, users):
    run = waiting_run(users["starter"])
    approvals.task_approve(task_id=open_task(run).pk, user=users["r1"], comment="ship it")
    run = drive(run)
    assert run.status == Run.Status.SUCCEEDED
    client.force_login(users["starter"])
    html = live(client, run)
    # No trigger left: the page stops polling after showing this.
    assert "hx-trigger" not in html.split('<div id="audit"')[0]
    assert "<code>run.finished</code>" in html
    assert "ship it" in html  # the approval's comment in the audit trail's detail
    final = Checkpoint.objects.filter(run=run).order_by("-seq").first()
    assert final is not None
    assert f'<span class="seq">{final.seq}</span>' in html


def test_the_live_part_keeps_the_audit_page_being_read(client, users, monkeypatch):
    from pipelines import views

    monkeypatch.setattr(views, "AUDIT_PER_PAGE", 2)
    run = waiting_run(users["starter"])
    client.force_login(users["starter"])
    html = live(client, run, audit_page=2)
    assert 'id="audit-page" name="audit_page" value="2"' in html
    assert re.search(r"page 2 of \d+", html)


def test_a_rollback_comment_and_target_show_in_the_audit_trail(client, users):
    run = waiting_run(users["starter"])
    approvals.task_rollback(
        task_id=open_task(run).pk, user=users["r1"], to_step="build", comment="rebuild please"
    )
    client.force_login(users["starter"])
    html = live(client, run)
    assert "rebuild please" in html
    assert "to <code>build</code>" in html


@pytest.mark.parametrize("rows", [1, 20])
def test_live_refresh_queries_do_not_grow(client, users, django_assert_max_num_queries, rows):
    runs = [waiting_run(users["starter"]) for _ in range(1)]
    run = runs[0]
    for _ in range(rows):
        approvals.task_rollback(
            task_id=open_task(run).pk, user=users["r1"], to_step="build", comment="again"
        )
        run = drive(run)
    client.force_login(users["starter"])
    live(client, run)  # the pipeline spec is cached after this
    # session, user, memberships, run, steps, audit page, checkpoints; row-level security's
    # enter and leave; the unsettled work, one query per kind (tasks, handoffs, steps,
    # deliveries, queued triggers).
    with django_assert_max_num_queries(14):
        live(client, run)


# --- the task page after a decision ---------------------------------------------------


def decide(client: Any, task: Any, action: str, **data: Any) -> str:
    url = reverse("task-action", args=[task.pk, action])
    response = client.post(url, data, **HX)
    return str(response.content.decode())


def test_a_decision_answers_with_the_header_and_picture_out_of_band(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    html = decide(client, task, "approve", comment="fine")
    panel, rest = html.split('<div id="task-head" hx-swap-oob="innerHTML">')
    assert "<strong>Completed</strong> by r1" in panel
    head, picture = rest.split('<div id="task-picture" hx-swap-oob="innerHTML">')
    assert 'class="pill st-completed">completed</span>' in head
    assert "st-open" not in head
    # The picture is read after the decision: the gate is no longer waiting.
    assert '<g class="node st-succeeded current" data-step="review">' in picture


def test_a_refused_decision_also_shows_who_decided_everywhere(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    client.force_login(users["r2"])
    html = decide(client, task, "reject", comment="too late")
    assert "already decided by r1" in html
    assert '<div id="task-head" hx-swap-oob="innerHTML">' in html
    assert "st-completed" in html.split('<div id="task-head"')[1]


def test_after_a_rollback_the_page_says_rolled_back_not_cancelled(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    html = decide(client, task, "rollback", to_step="build", comment="rebuild")
    assert "Rolled back to <code>build</code></strong> by r1" in html
    assert "Cancelled by" not in html
    page = client.get(reverse("task", args=[task.pk])).content.decode()
    assert "Rolled back to <code>build</code></strong> by r1" in page
    assert ">rolled back</span>" in page
    assert ">cancelled</span>" not in page


# --- the nav badge and the inbox ------------------------------------------------------


def test_the_inbox_refresh_brings_the_badge_from_its_own_count(client, users):
    waiting_run(users["starter"])
    waiting_run(users["starter"])
    client.force_login(users["r1"])
    fragment = client.get(reverse("home"), **HX).content.decode()
    assert fragment.count('class="button small"') == 2
    assert '<span id="nav-count" class="badge" hx-swap-oob="true">2</span>' in fragment
    # Filtered, the list shows fewer but the badge still counts every open task.
    filtered = client.get(reverse("home"), {"kind": "input"}, **HX).content.decode()
    assert '<span id="nav-count" class="badge" hx-swap-oob="true">2</span>' in filtered


def test_the_badge_polls_by_itself_everywhere_but_on_the_inbox(client, users):
    run = waiting_run(users["starter"])
    client.force_login(users["r1"])
    inbox = client.get(reverse("home")).content.decode()
    assert '<span id="nav-count" class="badge">1</span>' in inbox
    assert "hx-swap-oob" not in inbox
    elsewhere = client.get(reverse("run", args=[run.pk])).content.decode()
    assert f'hx-get="{reverse("inbox-count")}"' in elsewhere


def test_waits_read_in_minutes_and_hours_on_the_task_and_run_pages(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    # The task opened 72 minutes before its decision.
    HumanTask.objects.filter(pk=task.pk).update(created_at=task.created_at - timedelta(minutes=72))
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    run = drive(run)
    review = StepRun.objects.filter(run=run, step_name="review").latest("pk")
    StepRun.objects.filter(pk=review.pk).update(
        finished_at=review.started_at + timedelta(milliseconds=61_913)
    )
    client.force_login(users["r1"])
    page = client.get(reverse("task", args=[task.pk])).content.decode()
    assert "1 h 12 min</span> after it opened" in page
    html = live(client, run)
    assert '<span title="61913 ms">1 min 1 s</span>' in html
    assert "61913 ms</" not in html
    assert AuditEntry.objects.filter(run=run, latency_ms__isnull=False).exists()
    assert "took " in html
