"""Bulk decisions in one transaction: each task guarded, written and audited on its own."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.db.models import F

from approvals import bulk, rollup, services
from approvals.models import Decision, HumanTask
from orgs.models import Organization
from pipelines import services as pipelines
from pipelines.models import AuditEntry, Run
from tests.approvals.conftest import drive, open_task
from tests.approvals.test_services import waiting_run
from tests.races import chain_is_intact, in_thread, race

T = HumanTask.Status


def decide(user: Any, ids: list[int], action: str = "approve", comment: str = "") -> dict:
    outcomes = bulk.tasks_decide(
        user=user,
        organization=Organization.objects.default(),
        action=action,
        task_ids=ids,
        comment=comment,
    )
    return {o.task: o for o in outcomes}


def three_gates(users: dict) -> Run:
    """One run waiting at three tasks at once: a form, an approval, a two-vote approval."""
    pipelines.pipeline_create(
        member_role="starter",
        spec={
            "name": "three-gates",
            "steps": [
                {"name": "build", "type": "noop"},
                {
                    "name": "form",
                    "type": "input",
                    "after": ["build"],
                    "config": {"assignee": "r1", "form_schema": {"type": "object"}},
                },
                {
                    "name": "review",
                    "type": "approval",
                    "after": ["build"],
                    "config": {"assignee_role": "reviewers"},
                },
                {
                    "name": "panel",
                    "type": "approval",
                    "after": ["build"],
                    "config": {"assignee_role": "reviewers", "quorum": 2},
                },
            ],
        },
    )
    run = drive(pipelines.run_start(pipeline="three-gates", inputs={}, actor=users["starter"]))
    assert HumanTask.objects.filter(run=run, status=T.OPEN).count() == 3
    return run


def events_of(run: Run) -> list[tuple[str, str]]:
    return list(
        AuditEntry.objects.filter(run=run, event__startswith="task.")
        .exclude(event="task.opened")
        .order_by("seq")
        .values_list("event", "step_name")
    )


def test_a_failing_task_takes_back_only_its_own_writes_in_a_run_shared_with_others(users):
    run = three_gates(users)
    form, review, panel = (
        HumanTask.objects.get(run=run, step_name=name) for name in ("form", "review", "panel")
    )
    elsewhere = open_task(waiting_run(users))
    # Approving a form is refused only once the run is locked and the approval begins.
    outcomes = decide(users["r1"], [form.pk, review.pk, panel.pk, elsewhere.pk], comment="ok")

    assert outcomes[form.pk].outcome == "refused"
    assert outcomes[form.pk].http_status == 400
    assert "is a input task: complete it instead" in outcomes[form.pk].reason
    assert [outcomes[t.pk].status for t in (review, panel, elsewhere)] == [
        T.COMPLETED,
        T.OPEN,  # one vote of two
        T.COMPLETED,
    ]
    form.refresh_from_db()
    assert (form.status, form.decided_at, form.decided_by) == (T.OPEN, None, None)
    assert not Decision.objects.filter(task=form).exists()
    assert Decision.objects.filter(task__run=run, user=users["r1"]).count() == 2
    # Every entry in one chain, in the order decided, the refusal with its reason.
    assert events_of(run) == [
        ("task.refused", "form"),
        ("task.approved", "review"),
        ("task.approved", "panel"),
    ]
    refusal = AuditEntry.objects.get(run=run, event="task.refused")
    assert "complete it instead" in refusal.error_message
    assert refusal.data == {"task": form.pk, "action": "approve"}
    assert chain_is_intact(run)
    assert chain_is_intact(Run.objects.get(pk=elsewhere.run_id))
    # The run moves on from the approved review as after a decision made alone.
    assert drive(run).status == Run.Status.WAITING
    assert HumanTask.objects.filter(run=run, status=T.OPEN).count() == 2


def test_refusals_by_the_guard_are_audited_and_the_rest_decided(users):
    allowed = open_task(waiting_run(users))
    started = open_task(
        drive(
            pipelines.run_start(
                pipeline=allowed.run.pipeline_version.pipeline.name,
                inputs={"v": 2},
                actor=users["r1"],
            )
        )
    )
    closed = open_task(waiting_run(users))
    services.task_reject(task_id=closed.pk, user=users["r2"], comment="no")

    outcomes = decide(users["r1"], [started.pk, closed.pk, allowed.pk])

    assert outcomes[allowed.pk].decided
    assert outcomes[started.pk].http_status == 403
    assert "You started this run" in outcomes[started.pk].reason
    assert outcomes[closed.pk].http_status == 409
    assert "already rejected by r2" in outcomes[closed.pk].reason
    for task in (started, closed):
        assert events_of(task.run)[-1][0] == "task.refused"
        assert chain_is_intact(task.run)
    started.refresh_from_db()
    assert started.status == T.OPEN


def test_a_task_of_another_organization_is_not_found_and_left_alone(users):
    from tests.api.test_bulk_api import globex_task

    foreign = globex_task(users)
    mine = open_task(waiting_run(users))
    before = AuditEntry.objects.filter(run_id=foreign.run_id).count()

    outcomes = decide(users["r1"], [foreign.pk, mine.pk])

    assert (outcomes[foreign.pk].code, outcomes[foreign.pk].reason) == (
        "not_found",
        f"No task {foreign.pk}.",
    )
    assert outcomes[mine.pk].decided
    foreign.refresh_from_db()
    assert foreign.status == T.OPEN
    assert AuditEntry.objects.filter(run_id=foreign.run_id).count() == before


def test_a_task_decided_while_the_batch_waits_for_its_run_is_refused(transactional_db, users):
    first, contested, last = (open_task(waiting_run(users)) for _ in range(3))
    holding = threading.Event()

    def reject_and_hold() -> None:
        # Decided and still locked (not committed) when the batch asks for the run.
        with transaction.atomic():
            services.task_reject(task_id=contested.pk, user=users["r2"], comment="no")
            holding.set()
            threading.Event().wait(0.5)

    thread, result = in_thread(reject_and_hold)
    assert holding.wait(10)
    outcomes = decide(users["r1"], [first.pk, contested.pk, last.pk])
    thread.join(10)

    assert result == [None]
    assert outcomes[first.pk].decided
    assert outcomes[last.pk].decided
    assert outcomes[contested.pk].http_status == 409
    assert "already rejected by r2" in outcomes[contested.pk].reason
    assert list(
        Decision.objects.filter(task=contested).values_list("user__username", "action")
    ) == [("r2", "reject")]
    assert events_of(contested.run)[-2:] == [
        ("task.rejected", "review"),
        ("task.refused", "review"),
    ]
    assert chain_is_intact(contested.run)


@pytest.mark.parametrize("attempt", range(2))
def test_batches_over_the_same_runs_in_opposite_orders_each_decide_a_task_once(
    transactional_db, users, attempt
):
    tasks = [open_task(waiting_run(users)) for _ in range(4)]
    ids = [t.pk for t in tasks]

    forward, backward = race(
        lambda: decide(users["r1"], ids, "reject", "no"),
        lambda: decide(users["r2"], ids[::-1], "approve"),
    )

    # Runs are locked in one order by every batch: no deadlock, and each task is
    # decided by exactly one of them, the other told who came first.
    assert isinstance(forward, dict), forward
    assert isinstance(backward, dict), backward
    for task in tasks:
        won = [o for o in (forward[task.pk], backward[task.pk]) if o.decided]
        lost = [o for o in (forward[task.pk], backward[task.pk]) if not o.decided]
        assert len(won) == len(lost) == 1
        assert lost[0].code == "already_decided"
        assert Decision.objects.filter(task=task).count() == 1
        assert chain_is_intact(task.run)


def test_a_batch_keeps_the_insights_rollup_a_recount_gives(users):
    from tests.insights.test_rollup import gated_tasks, rows

    tasks = gated_tasks(users, 5)
    # Waits in different buckets, and a day's row the batch adds to.
    for n, task in enumerate(tasks):
        HumanTask.objects.filter(pk=task.pk).update(
            created_at=F("created_at") - timedelta(minutes=7**n)
        )
    services.task_approve(task_id=tasks[0].pk, user=users["r2"])
    run = three_gates(users)
    form, review = (HumanTask.objects.get(run=run, step_name=n) for n in ("form", "review"))

    # The form fails halfway: its pending rows must go with its savepoint.
    outcomes = decide(users["r1"], [form.pk, review.pk, *[t.pk for t in tasks[1:]]])

    assert [o.decided for o in outcomes.values()] == [False] + [True] * 5
    assert Decision.objects.filter(task__in=[review, *tasks[1:]], user=users["r1"]).count() == 5
    kept = rows()
    assert sum(r[7] for r in kept[0]) == HumanTask.objects.filter(decided_at__isnull=False).count()
    assert max(sum(1 for c in r[8] if c) for r in kept[0]) > 2  # one row, several buckets
    rollup.rebuild()
    assert rows() == kept


def test_a_task_closed_by_an_earlier_decision_of_the_batch_is_refused_as_closed(users):
    run = three_gates(users)
    review, panel = (HumanTask.objects.get(run=run, step_name=n) for n in ("review", "panel"))

    # Rejecting the review ends the run, which cancels the panel's task.
    outcomes = decide(users["r1"], [review.pk, panel.pk], "reject", "not this one")

    assert outcomes[review.pk].status == T.REJECTED
    assert outcomes[panel.pk].code == "already_decided"
    assert f"Task {panel.pk} was already cancelled" in outcomes[panel.pk].reason
    assert Run.objects.get(pk=run.pk).status == Run.Status.REJECTED
    assert not Decision.objects.filter(task=panel).exists()
    assert events_of(run)[-1] == ("task.refused", "panel")
    assert chain_is_intact(run)


def test_a_batch_tells_each_requester_once_and_never_one_who_left(transactional_db, users):
    """The batch reads requesters together (its commit runs the notices inside it), with
    the rule of a single decision: the starter hears of each gate while a member, and
    nothing once they left."""
    from django.core import mail

    from orgs.models import Membership

    runs = [waiting_run(users) for _ in range(3)]
    tasks = [open_task(run).pk for run in runs]
    mail.outbox.clear()
    decide(users["r1"], tasks[:2])
    told = [m for m in mail.outbox if m.to == ["starter@example.com"]]
    assert len(told) == 2
    for run in runs[:2]:
        assert any(f"Run {run.pk}, step review: completed by r1" in str(m.body) for m in told)

    Membership.objects.filter(user=users["starter"]).delete()
    mail.outbox.clear()
    assert decide(users["r1"], tasks[2:])[tasks[2]].outcome == "decided"
    assert [m for m in mail.outbox if m.to == ["starter@example.com"]] == []
