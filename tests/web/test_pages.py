"""The reviewer and operator pages through Django's test client."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from approvals import services as approvals
from approvals.models import Decision, HumanTask
from pipelines import services
from pipelines.dag import render_svg
from pipelines.models import Run
from tests.approvals.conftest import drive, open_task
from tests.web.conftest import gate_pipeline, waiting_run

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def urls_for(run: Run, task: HumanTask) -> list[str]:
    return [
        reverse("home"),
        reverse("task", args=[task.pk]),
        reverse("runs"),
        reverse("run", args=[run.pk]),
        reverse("pipelines"),
        reverse("pipeline", args=["gated"]),
    ]


# --- access ---------------------------------------------------------------------------


def test_every_page_renders_for_a_signed_in_user(client, users):
    run = waiting_run(users["starter"])
    client.force_login(users["r1"])
    for url in urls_for(run, open_task(run)):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"Firefly" in response.content


def test_anonymous_users_are_sent_to_login(client, users):
    run = waiting_run(users["starter"])
    for url in [*urls_for(run, open_task(run)), reverse("inbox-count")]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next=")
    assert client.get("/login/").status_code == 200


def test_pages_use_the_vendored_htmx_and_swap_refusals(client, users):
    client.force_login(users["r1"])
    page = client.get("/").content.decode()
    assert "/static/vendor/htmx.min.js" in page
    assert '"code": "4..", "swap": true' in page
    assert "X-CSRFToken" in page


def test_login_page_logs_in(client, users):
    response = client.post("/login/", {"username": "r1", "password": "x"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_posts_only_no_state_change_on_get(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    assert client.get(reverse("task-action", args=[task.pk, "approve"])).status_code == 405
    assert client.get(reverse("run-cancel", args=[run.pk])).status_code == 405
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN


# --- inbox ----------------------------------------------------------------------------


def test_inbox_shows_my_tasks_only(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    page = client.get("/").content.decode()
    assert reverse("task", args=[task.pk]) in page
    assert "review" in page
    assert 'hx-trigger="every 5s"' in page
    assert client.get(reverse("inbox-count")).content == b"1"

    client.force_login(users["outsider"])
    page = client.get("/").content.decode()
    assert reverse("task", args=[task.pk]) not in page
    assert "Nothing to review." in page
    assert client.get(reverse("inbox-count")).content == b""


def test_inbox_filters_and_partial(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    fragment = client.get("/", {"kind": "approval"}, **HX).content.decode()
    assert "<html" not in fragment
    assert reverse("task", args=[task.pk]) in fragment
    assert "Nothing to review" in client.get("/", {"kind": "input"}, **HX).content.decode()
    other = client.get("/", {"pipeline": "nope", "sort": "new"}, **HX).content.decode()
    assert "No open tasks match these filters." in other


def test_overdue_tasks_are_marked(client, users):
    run = waiting_run(users["starter"], timeout_hours=1)
    task = open_task(run)
    HumanTask.objects.filter(pk=task.pk).update(due_at=task.created_at.replace(year=2000))
    client.force_login(users["r1"])
    assert 'class="overdue"' in client.get("/").content.decode()


# --- decisions ------------------------------------------------------------------------


def test_approve_then_a_second_decision_is_too_late(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    url = reverse("task-action", args=[task.pk, "approve"])
    client.force_login(users["r1"])
    response = client.post(url, {"comment": "ship it"}, **HX)
    assert response.status_code == 200
    assert "Approved." in response.content.decode()
    task.refresh_from_db()
    assert task.status == HumanTask.Status.COMPLETED
    assert drive(run).status == Run.Status.SUCCEEDED

    client.force_login(users["r2"])
    response = client.post(url, {"comment": "me too"}, **HX)
    assert response.status_code == 409
    text = response.content.decode()
    assert "already decided by r1 at" in text
    assert "<html" not in text
    assert Decision.objects.filter(task=task).count() == 1


def test_a_plain_post_redirects_with_a_flash_message(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    url = reverse("task-action", args=[task.pk, "approve"])
    response = client.post(url, {"comment": ""}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("task", args=[task.pk])
    assert "Approved." in response.content.decode()
    response = client.post(url, {}, follow=True)
    assert "already decided by r1" in response.content.decode()


def test_reject_needs_a_comment(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    url = reverse("task-action", args=[task.pk, "reject"])
    response = client.post(url, {"comment": " "}, **HX)
    assert response.status_code == 400
    assert "Say why you reject." in response.content.decode()
    response = client.post(url, {"comment": "tests are red"}, **HX)
    assert response.status_code == 200
    task.refresh_from_db()
    run.refresh_from_db()
    assert task.status == HumanTask.Status.REJECTED
    assert run.status == Run.Status.REJECTED


def test_rollback_to_an_earlier_step(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    page = client.get(reverse("task", args=[task.pk])).content.decode()
    assert '<option value="build">build</option>' in page
    url = reverse("task-action", args=[task.pk, "rollback"])
    assert client.post(url, {"to_step": "ship", "comment": ""}, **HX).status_code == 400
    response = client.post(url, {"to_step": "build", "comment": "rebuild"}, **HX)
    assert response.status_code == 200
    assert Decision.objects.get(task=task).rollback_to == "build"
    run.refresh_from_db()
    assert run.generation == 2
    new_task = open_task(drive(run))
    assert new_task.generation == 2


def test_a_forged_post_by_an_outsider_is_forbidden(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["outsider"])
    page = client.get(reverse("task", args=[task.pk])).content.decode()
    assert "Approve</button>" not in page
    assert "you can follow it here" in page
    for action in ("approve", "reject", "complete"):
        url = reverse("task-action", args=[task.pk, action])
        assert client.post(url, {"comment": "x"}, **HX).status_code == 403
        assert client.post(url, {"comment": "x"}).status_code == 403
    assert not Decision.objects.filter(task=task).exists()
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN


def test_the_starter_may_not_approve_their_own_run(client, users):
    users["starter"].groups.add(*users["r1"].groups.all())
    run = waiting_run(users["starter"])
    client.force_login(users["starter"])
    url = reverse("task-action", args=[open_task(run).pk, "approve"])
    response = client.post(url, {}, **HX)
    assert response.status_code == 403
    assert "may not approve it yourself" in response.content.decode()


def test_claim_and_unclaim(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    response = client.post(reverse("task-action", args=[task.pk, "claim"]), **HX)
    assert response.status_code == 200
    assert "Unclaim" in response.content.decode()
    task.refresh_from_db()
    assert task.claimed_by == users["r1"]
    client.force_login(users["r2"])
    assert client.post(reverse("task-action", args=[task.pk, "approve"]), **HX).status_code == 403
    client.force_login(users["r1"])
    client.post(reverse("task-action", args=[task.pk, "unclaim"]), **HX)
    task.refresh_from_db()
    assert task.claimed_by is None


FORM = {
    "type": "object",
    "required": ["title", "words"],
    "properties": {
        "title": {"type": "string", "minLength": 3, "title": "Title"},
        "words": {"type": "integer", "minimum": 1},
        "category": {"enum": ["news", "howto"]},
        "publish_on": {"type": "string", "format": "date"},
        "featured": {"type": "boolean"},
    },
}


def test_input_form_shows_field_errors_then_succeeds(client, users):
    run = waiting_run(users["starter"], kind="input", form_schema=FORM)
    task = open_task(run)
    client.force_login(users["r1"])
    page = client.get(reverse("task", args=[task.pk])).content.decode()
    assert 'type="date"' in page
    assert 'type="checkbox"' in page
    assert "<select" in page
    assert 'type="number"' in page
    assert 'class="req"' in page
    url = reverse("task-action", args=[task.pk, "complete"])
    response = client.post(url, {"title": "ab", "words": "many", "category": "news"}, **HX)
    assert response.status_code == 400
    text = response.content.decode()
    assert "&#x27;ab&#x27; is too short" in text
    assert "&#x27;many&#x27; is not of type &#x27;integer&#x27;" in text
    assert 'value="ab"' in text  # what was typed stays in the form
    response = client.post(
        url,
        {
            "title": "Hello",
            "words": "12",
            "category": "howto",
            "publish_on": "2026-01-02",
            "featured": "on",
        },
        **HX,
    )
    assert response.status_code == 200, response.content.decode()
    task.refresh_from_db()
    assert task.status == HumanTask.Status.COMPLETED
    data = Decision.objects.get(task=task).data["data"]
    assert data == {
        "title": "Hello",
        "words": 12,
        "category": "howto",
        "publish_on": "2026-01-02",
        "featured": True,
    }


def test_choice_buttons(client, users):
    run = waiting_run(users["starter"], kind="choice", options=["blog", "newsletter"])
    task = open_task(run)
    client.force_login(users["r1"])
    page = client.get(reverse("task", args=[task.pk])).content.decode()
    assert 'name="choice" value="newsletter"' in page
    url = reverse("task-action", args=[task.pk, "complete"])
    assert client.post(url, {"choice": "tv"}, **HX).status_code == 400
    assert client.post(url, {"choice": "blog"}, **HX).status_code == 200
    assert Decision.objects.get(task=task).data["choice"] == "blog"


def test_task_context_is_escaped(client, users):
    run = waiting_run(users["starter"], inputs={"version": "<script>alert(1)</script>"})
    client.force_login(users["r1"])
    page = client.get(reverse("task", args=[open_task(run).pk])).content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<details" in page


# --- runs and pipelines ---------------------------------------------------------------


def test_start_run_form_errors_then_redirects(client, users):
    gate_pipeline()
    client.force_login(users["starter"])
    page = client.get(reverse("pipeline", args=["gated"])).content.decode()
    assert 'name="version"' in page
    assert "<svg" in page
    url = reverse("pipeline-start", args=["gated"])
    response = client.post(url, {"version": ""})
    assert response.status_code == 400
    assert "&#x27;version&#x27; is a required property" in response.content.decode()
    assert not Run.objects.exists()
    response = client.post(url, {"version": ""}, **HX)
    assert response.status_code == 400
    assert "<html" not in response.content.decode()
    assert "field-error" in response.content.decode()
    response = client.post(url, {"version": "2.0"})
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("run", args=[run.pk])
    assert run.inputs == {"version": "2.0"}
    assert run.created_by == users["starter"]
    response = client.post(url, {"version": "3.0"}, **HX)
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/runs/")


def test_cancel_only_while_unfinished(client, users):
    run = waiting_run(users["starter"])
    cancel = reverse("run-cancel", args=[run.pk])
    client.force_login(users["outsider"])
    assert "Cancel run" not in client.get(reverse("run", args=[run.pk])).content.decode()
    assert client.post(cancel).status_code == 403
    client.force_login(users["starter"])
    assert "Cancel run" in client.get(reverse("run", args=[run.pk])).content.decode()
    response = client.post(cancel)
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    page = client.get(reverse("run", args=[run.pk])).content.decode()
    assert "Cancel run" not in page
    assert "every 3s" not in page
    response = client.post(cancel, follow=True)
    assert "already cancelled" in response.content.decode()
    assert client.post(cancel, **HX).status_code == 409


def test_resume_only_a_failed_run(client, users):
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "flaky",
            "steps": [
                {"name": "a", "type": "noop"},
                {"name": "b", "type": "fail", "after": ["a"], "config": {"times": 1}},
            ],
        },
    )
    run = drive(services.run_start(pipeline="flaky", inputs={}, actor=users["starter"]))
    assert run.status == Run.Status.FAILED
    client.force_login(users["starter"])
    page = client.get(reverse("run", args=[run.pk])).content.decode()
    assert "Resume</button>" in page
    assert "Cancel run" not in page
    assert client.post(reverse("run-resume", args=[run.pk])).status_code == 302
    assert drive(run).status == Run.Status.SUCCEEDED
    response = client.post(reverse("run-resume", args=[run.pk]), **HX)
    assert response.status_code == 409


def test_fork_from_a_checkpoint(client, users):
    run = waiting_run(users["starter"])
    client.force_login(users["starter"])
    page = client.get(reverse("run", args=[run.pk])).content.decode()
    assert "Fork from here" in page
    seq = run.checkpoints.order_by("seq").first().seq
    response = client.post(reverse("run-fork", args=[run.pk]), {"checkpoint": seq})
    new = Run.objects.exclude(pk=run.pk).get()
    assert response["Location"] == reverse("run", args=[new.pk])
    assert new.forked_from == run
    response = client.post(reverse("run-fork", args=[run.pk]), {"checkpoint": 999}, follow=True)
    assert "has no checkpoint 999" in response.content.decode()


def test_run_page_partials_and_audit(client, users):
    run = waiting_run(users["starter"])
    client.force_login(users["r1"])
    live = client.get(reverse("run", args=[run.pk]), {"part": "live"}, **HX).content.decode()
    assert "<html" not in live
    assert "every 3s" in live
    assert "st-waiting" in live
    audit = client.get(reverse("run", args=[run.pk]), {"part": "audit"}, **HX).content.decode()
    assert "run.created" in audit
    assert "task.opened" in audit


def test_a_waiting_step_links_to_its_task_until_it_is_decided(client, users):
    run = waiting_run(users["starter"])
    task = open_task(run)
    client.force_login(users["r1"])
    link = f'<a href="{reverse("task", args=[task.pk])}">task {task.pk}</a>'
    live = client.get(reverse("run", args=[run.pk]), {"part": "live"}, **HX).content.decode()
    steps = live.split("<h2>Steps</h2>", 1)[1]
    assert link in steps
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    live = client.get(reverse("run", args=[run.pk]), {"part": "live"}, **HX).content.decode()
    assert link not in live.split("<h2>Steps</h2>", 1)[1]


def test_a_step_queued_for_a_named_queue_says_which(client, users, make_pipeline):
    name = make_pipeline([{"name": "crunch", "type": "noop", "queue": "cpu"}])
    run = services.run_start(pipeline=name, inputs={}, actor=users["starter"])
    services.run_advance(run_id=run.pk)  # queued; no worker here takes it
    client.force_login(users["r1"])
    live = client.get(reverse("run", args=[run.pk]), {"part": "live"}, **HX).content.decode()
    assert "st-queued" in live
    assert "on <code>cpu</code>" in live


def test_runs_list_filters_and_progress(client, users):
    run = waiting_run(users["starter"])
    client.force_login(users["r1"])
    page = client.get(reverse("runs")).content.decode()
    assert "1/3" in page
    assert 'hx-trigger="every 5s"' in page
    assert "No runs yet." in client.get(reverse("runs"), {"status": "failed"}).content.decode()
    fragment = client.get(reverse("runs"), {"pipeline": "gated"}, **HX).content.decode()
    assert reverse("run", args=[run.pk]) in fragment
    assert "<html" not in fragment


# --- query counts ---------------------------------------------------------------------


def _many_runs(users: dict[str, Any], count: int) -> None:
    gate_pipeline()
    for index in range(count):
        run = services.run_start(
            pipeline="gated", inputs={"version": str(index)}, actor=users["starter"]
        )
        drive(run)


@pytest.mark.parametrize("rows", [1, 20])
def test_inbox_queries_do_not_grow(client, users, django_assert_max_num_queries, rows):
    _many_runs(users, rows)
    client.force_login(users["r1"])
    # session, user, page count, tasks, their runs' pipelines by key, pipeline names for
    # the filter, the open count for the nav badge (sent with the list so the two agree).
    # And the user's memberships, row-level security's enter and leave; whether the nav
    # offers Insights.
    with django_assert_max_num_queries(11):
        response = client.get("/")
    assert response.content.decode().count('class="button small"') == rows


def test_the_inbox_is_paginated(client, users, monkeypatch):
    from approvals import views

    monkeypatch.setattr(views, "INBOX_PAGE_SIZE", 2)
    _many_runs(users, 3)
    client.force_login(users["r1"])
    first = client.get("/").content.decode()
    assert first.count('class="button small"') == 2
    assert "page 1 of 2" in first
    second = client.get("/?page=2").content.decode()
    assert second.count('class="button small"') == 1


@pytest.mark.parametrize("rows", [1, 20])
def test_runs_list_queries_do_not_grow(client, users, django_assert_max_num_queries, rows):
    _many_runs(users, rows)
    client.force_login(users["r1"])
    # session, user, page count, runs with their progress, their pipelines by key,
    # pipeline names for the filter. And the user's memberships, row-level security's
    # enter and leave (orgs/rls.py); whether the nav offers Insights.
    with django_assert_max_num_queries(10):
        response = client.get(reverse("runs"))
    assert response.content.decode().count("1/3") == rows


# --- the DAG picture ------------------------------------------------------------------


def test_dag_svg_has_every_step_of_a_big_pipeline(client, users):
    steps: list[dict[str, Any]] = [{"name": "step-0", "type": "noop"}]
    for index in range(1, 35):
        after = [f"step-{index - 1}"] + ([f"step-{index - 3}"] if index >= 3 else [])
        steps.append({"name": f"step-{index}", "type": "noop", "after": after})
    services.pipeline_create(member_role="starter", spec={"name": "big", "steps": steps})
    spec = services.version_spec(services.pipeline_version("big").pk)
    svg = str(render_svg(spec))
    assert svg == str(render_svg(spec))  # deterministic
    for index in range(35):
        assert f'data-step="step-{index}"' in svg
    client.force_login(users["r1"])
    page = client.get(reverse("pipeline", args=["big"])).content.decode()
    assert all(f"step-{index}" in page for index in range(35))


def test_who_approved_waits_for_the_quorum_without_an_approve_button(client, users):
    run = waiting_run(users["starter"], quorum=2)
    task = open_task(run)
    client.force_login(users["r1"])
    client.post(f"/tasks/{task.pk}/approve/", {"comment": ""}, HTTP_HX_REQUEST="true")

    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "You approved. Waiting for 2 approvals in all (1 so far)." in page
    assert ">Approve</button>" not in page
    client.force_login(users["r2"])
    assert ">Approve</button>" in client.get(f"/tasks/{task.pk}/").content.decode()


def test_the_runs_list_pages_keep_their_filters(client, users, monkeypatch):
    from pipelines import views

    monkeypatch.setattr(views, "RUNS_PER_PAGE", 1)
    waiting_run(users["starter"])
    services.run_start(pipeline="gated", inputs={"version": "2"}, actor=users["starter"])
    client.force_login(users["r1"])
    page = client.get("/runs/?pipeline=gated").content.decode()
    assert "page 1 of 2" in page
    assert 'href="?pipeline=gated&page=2">Older →</a>' in page
