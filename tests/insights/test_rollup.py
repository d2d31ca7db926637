"""The insights' rollup, kept by the decision services, equals a recount from the raw rows."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from approvals import rollup, services
from approvals.models import Decision, DecisionDay, HumanTask, TaskDay
from pipelines import services as pipelines
from tests.approvals.conftest import drive, open_task
from tests.races import race

NAMES = itertools.count()


def gated(users: dict[str, Any], **review: Any) -> HumanTask:
    return gated_tasks(users, 1, **review)[0]


def gated_tasks(users: dict[str, Any], runs: int, **review: Any) -> list[HumanTask]:
    """A new pipeline whose review step is assigned to `reviewers`, and `runs` runs of it
    waiting on their tasks."""
    name = f"rollup-{next(NAMES)}"
    pipelines.pipeline_create(
        member_role="starter",
        spec={
            "name": name,
            "steps": [
                {"name": "build", "type": "noop"},
                {
                    "name": "review",
                    "type": "approval",
                    "after": ["build"],
                    "config": {"assignee_role": "reviewers", **review},
                },
                {"name": "ship", "type": "noop", "after": ["review"]},
            ],
        },
    )
    return [
        open_task(drive(pipelines.run_start(pipeline=name, inputs={}, actor=users["starter"])))
        for _ in range(runs)
    ]


def rows() -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    tasks = {
        (
            r.organization_id,
            r.day,
            r.pipeline_key,
            r.step_name,
            r.user_key,
            r.role_key,
            r.status,
            r.tasks,
            tuple(r.waits),
        )
        for r in TaskDay.objects.all()
    }
    decisions = set(
        DecisionDay.objects.values_list(
            "organization_id", "day", "pipeline_key", "action", "decisions"
        )
    )
    return tasks, decisions


def test_the_rollup_equals_a_recount_after_a_mix_of_decisions(transactional_db, users):
    r1, r2 = users["r1"], users["r2"]
    services.task_approve(task_id=gated(users).pk, user=r1)
    services.task_reject(task_id=gated(users).pk, user=r1, comment="No.")
    services.task_rollback(task_id=gated(users).pk, user=r1, to_step="build", comment="Again.")
    two = gated(users, quorum=2)
    services.task_approve(task_id=two.pk, user=r1)  # a vote, the task stays open
    services.task_approve(task_id=two.pk, user=r2)
    for policy in ("reject", "escalate:leads"):
        late = gated(users, timeout_hours=1, on_timeout=policy)
        HumanTask.objects.filter(pk=late.pk).update(due_at=timezone.now() - timedelta(minutes=1))
        assert services.task_expire(task_id=late.pk)
    # Two decisions at once on tasks of the same pipeline, step and day (the same row),
    # and a decision racing the deadline on one task.
    first, second = gated_tasks(users, 2)
    race(
        lambda: services.task_approve(task_id=first.pk, user=r1),
        lambda: services.task_approve(task_id=second.pk, user=r2),
    )
    raced = gated(users, timeout_hours=1)
    HumanTask.objects.filter(pk=raced.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    race(
        lambda: services.task_approve(task_id=raced.pk, user=r1),
        lambda: services.task_expire(task_id=raced.pk),
    )

    kept = rows()
    closed = HumanTask.objects.filter(decided_at__isnull=False).count()
    assert sum(r[7] for r in kept[0]) == closed >= 8  # the rolled back task's rerun is open
    assert sum(r[4] for r in kept[1]) == Decision.objects.count()
    assert {r[3] for r in kept[1]} >= {"approve", "reject", "rollback", "expire", "escalate"}
    assert any(r[7] == 2 for r in kept[0])  # the two concurrent approvals share a row
    rollup.rebuild()
    assert rows() == kept


def test_percentiles_from_buckets_stay_within_the_stated_precision():
    waits = [0.4, 3, 45, 60, 120, 300, 3600, 5000, 90000, 7 * 86400]
    histogram = [0] * rollup.BUCKETS
    for wait in waits:
        histogram[rollup.bucket_of(wait)] += 1
    for fraction in (0.5, 0.95):
        # percentile_cont of the waits themselves, as PostgreSQL computes it.
        position = fraction * (len(waits) - 1)
        low = int(position)
        exact = waits[low] + (waits[low + 1] - waits[low]) * (position - low)
        assert rollup.percentile(histogram, fraction) == pytest.approx(
            exact, rel=rollup.PRECISION_PCT / 100
        )
    assert rollup.percentile([0] * rollup.BUCKETS, 0.5) is None
