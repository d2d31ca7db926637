"""A run's timeline: a bar per attempt, retries and generations named, people's waits apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.urls import reverse

from approvals import services as approvals
from pipelines import services, timeline
from pipelines.spec import parse_spec
from tests.approvals.conftest import drive, open_task

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def attempt(step, status, queued=None, started=None, finished=None, generation=1, attempt=1):
    return SimpleNamespace(
        step_name=step,
        generation=generation,
        attempt=attempt,
        status=status,
        queued_at=None if queued is None else at(queued),
        started_at=None if started is None else at(started),
        finished_at=None if finished is None else at(finished),
    )


SPEC = parse_spec(
    {
        "name": "t",
        "steps": [
            {"name": "build", "type": "fail", "config": {"times": 1}, "retries": 1},
            {
                "name": "review",
                "type": "approval",
                "after": ["build"],
                "config": {"assignee_role": "r"},
            },
            {"name": "ship", "type": "noop", "after": ["review"]},
        ],
    }
)


def test_each_attempt_is_a_bar_with_its_retry_and_generation_and_people_apart():
    rows = [
        attempt("build", "failed", 0, 1, 3),
        attempt("build", "succeeded", 4, 5, 9, attempt=2),
        attempt("review", "waiting", None, 9, None),
        attempt("ship", "pending"),
        attempt("build", "running", 600, 601, None, generation=2),
    ]
    found = timeline.build(SPEC, rows, now=at(700))

    assert [b.label for b in found.bars] == ["build", "build · try 2", "review", "build · gen 2"]
    first, retry, review, again = found.bars
    assert (first.queued_ms, first.active_ms, first.human) == (1000, 2000, False)
    assert retry.active_ms == 4000
    # Still waiting: the wait runs until now, and it is people's time, not machines'.
    assert review.human
    assert review.active_ms == 691_000
    assert again.active_ms == 99_000
    assert found.human_ms == 691_000
    assert found.machine_ms == 2000 + 4000 + 99_000

    svg = str(found.svg())
    assert svg.count('class="tl-row"') == 4
    assert 'class="tl-run st-failed"' in svg
    assert 'class="tl-human st-waiting"' in svg
    assert 'fill="url(#tl-hatch)"' in svg
    assert svg.count('class="tl-queued"') == 3
    assert 'role="img"' in svg
    assert "waiting for people" in svg
    assert "try 2" in svg
    assert "gen 2" in svg


def test_a_retry_waiting_out_its_backoff_is_drawn_no_later_than_now():
    rows = [attempt("build", "failed", 0, 1, 2), attempt("build", "queued", 60, attempt=2)]
    found = timeline.build(SPEC, rows, now=at(10))
    assert found.end == at(10)
    assert found.bars[1].queued_ms == 0


def test_a_run_not_started_has_no_bars():
    found = timeline.build(SPEC, [attempt("build", "pending")], now=at(1))
    assert found.bars == ()
    assert str(found.svg()) == ""


@pytest.mark.django_db
def test_the_run_page_shows_a_retried_step_a_wait_for_a_person_and_a_second_generation(
    client, users
):
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "timed",
            "steps": [
                {
                    "name": "build",
                    "type": "fail",
                    "config": {"times": 1},
                    "retries": 1,
                    "retry_backoff_s": 0,
                },
                {
                    "name": "review",
                    "type": "approval",
                    "after": ["build"],
                    "config": {"assignee_role": "reviewers"},
                },
                {"name": "ship", "type": "noop", "after": ["review"]},
            ],
        },
    )
    run = drive(services.run_start(pipeline="timed", inputs={}, actor=users["starter"]))
    client.force_login(users["starter"])
    page = client.get(reverse("run", args=[run.pk])).content.decode()
    assert '<section class="card" id="run-timeline">' in page
    assert "build · try 2" in page
    assert 'class="tl-run st-failed"' in page
    assert 'class="tl-human st-waiting"' in page
    assert page.count('class="tl-row"') == 3  # build twice, then review waiting

    services.run_rollback(run_id=run.pk, to_step="build", actor=users["starter"])
    drive(run)
    approvals.task_approve(task_id=open_task(run).pk, user=users["r1"])
    drive(run)
    live = client.get(
        reverse("run", args=[run.pk]) + "?part=live", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "build · gen 2" in live
    assert "review · gen 2" in live
    # The first wait ended with the roll back; the second with the approval.
    assert 'class="tl-human st-cancelled"' in live
    assert 'class="tl-human st-succeeded"' in live
    assert "waiting for people" in live


def test_a_very_long_run_draws_its_first_attempts_and_lists_them_all():
    rows = [attempt("build", "failed", i, i, i + 0.5, attempt=i + 1) for i in range(200)]
    found = timeline.build(SPEC, rows, now=at(300))
    assert len(found.bars) == 200
    assert str(found.svg()).count('class="tl-row"') == timeline.MAX_ROWS


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (120, "2 min"),
        (5400, "1 h 30 min"),
        (7200, "2 h"),
        (90000, "1 d 1 h"),
    ],
)
def test_the_axis_reads_in_people_s_units(seconds, said):
    assert timeline.tick_label(seconds) == said
