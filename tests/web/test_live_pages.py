"""Live parts of the run and task pages: every panel refreshed, the last refresh, waits."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from approvals import services as approvals
from pipelines.models import Checkpoint, Run
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
