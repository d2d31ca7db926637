"""A vote counts for one attempt of one run: a resumed gate asks its quorum again."""

from __future__ import annotations

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines import services
from pipelines.models import StepRun
from tests.approvals.conftest import drive


def test_a_resumed_gate_does_not_count_votes_from_before(users):
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "flaky-gate",
            "steps": [
                {"name": "check", "type": "fail", "config": {"times": 1}},
                {
                    "name": "review",
                    "type": "approval",
                    "config": {"assignee_role": "reviewers", "quorum": 2},
                },
                {"name": "ship", "type": "noop", "after": ["check", "review"]},
            ],
        },
    )
    run = services.run_start(pipeline="flaky-gate", inputs={}, actor=users["starter"])
    services.run_advance(run_id=run.pk)
    first = HumanTask.objects.get(run=run, status="open")
    approvals.task_approve(task_id=first.pk, user=users["r1"])
    run = drive(run)  # `check` fails: the run fails and the half-approved gate is cancelled
    assert run.status == "failed"
    assert HumanTask.objects.get(pk=first.pk).status == "cancelled"

    services.run_resume(run_id=run.pk, actor=users["starter"])
    run = drive(run)
    second = HumanTask.objects.get(run=run, status="open")
    assert second.pk != first.pk
    approvals.task_approve(task_id=second.pk, user=users["r2"])
    second.refresh_from_db()
    assert second.status == "open"  # one vote of two: r1's earlier vote does not count
    assert not StepRun.objects.filter(run=run, step_name="ship", status="succeeded").exists()

    approvals.task_approve(task_id=second.pk, user=users["r1"])
    assert drive(run).status == "succeeded"
