"""A small known data set for the insights: decided and open tasks in two organizations."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals import rollup
from approvals import services as approvals
from approvals.models import Decision, HumanTask
from orgs.models import Membership, Organization
from pipelines import services
from pipelines.models import Pipeline, PipelineGrant, Run
from tests.approvals.conftest import drive, open_task


def gate_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"name": "build", "type": "noop"},
            {
                "name": "review",
                "type": "approval",
                "after": ["build"],
                "config": {"assignee_role": "reviewers", "instructions": "Check it."},
            },
            {"name": "ship", "type": "noop", "after": ["review"]},
        ],
    }


def gated_task(name: str, starter: Any, organization: Any = None) -> HumanTask:
    services.pipeline_create(spec=gate_spec(name), organization=organization, member_role="starter")
    run = services.run_start(pipeline=name, inputs={}, actor=starter, organization=organization)
    drive(run)
    return open_task(run)


def timed(task: HumanTask, *, opened: Any, waited_s: float | None, due_in_s: float | None) -> None:
    """Move a task (and its decisions) in time: opened at `opened`, decided `waited_s`
    later (if decided), due `due_in_s` after opening (if it has a deadline)."""
    decided = None if waited_s is None else opened + timedelta(seconds=waited_s)
    due = None if due_in_s is None else opened + timedelta(seconds=due_in_s)
    fields: dict[str, Any] = {"created_at": opened, "due_at": due}
    if decided is not None:
        fields["decided_at"] = decided
        Decision.objects.filter(task=task).update(created_at=decided)
        Run.objects.filter(pk=task.run_id, finished_at__isnull=False).update(finished_at=decided)
    HumanTask.objects.filter(pk=task.pk).update(**fields)


@pytest.fixture
def insight_data(users: dict[str, Any]) -> SimpleNamespace:
    return known_data(users)


def known_data(users: dict[str, Any]) -> SimpleNamespace:
    """In the default organization, pipeline `gated` (r1 operates it by a grant):
    four tasks decided two days ago after 60, 120, 300 and 3600 s (approve, approve,
    reject, approve), one open for two hours and overdue by one; pipeline `private-pipe` (no
    grant to r1): one task decided after 7 days, one open. In organization `acme`: a
    pipeline whose task waited 5 s, seen by nobody here."""
    now = timezone.now()
    # At ten in the morning (UTC, the site's zone), so that the longest wait still ends
    # that same day whenever the tests run.
    two_days_ago = (now - timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
    starter, r1, r2 = users["starter"], users["r1"], users["r2"]
    waits = [
        (60, "approve", None),
        (120, "approve", None),
        (300, "reject", 100),
        (3600, "approve", 7200),
    ]
    decided = []
    for waited, action, due in waits:
        task = gated_task("gated", starter)
        if action == "approve":
            approvals.task_approve(task_id=task.pk, user=r2)
        else:
            approvals.task_reject(task_id=task.pk, user=r2, comment="No.")
        drive(Run.objects.get(pk=task.run_id))
        timed(task, opened=two_days_ago, waited_s=waited, due_in_s=due)
        decided.append(task)
    waiting = gated_task("gated", starter)
    timed(waiting, opened=now - timedelta(hours=2), waited_s=None, due_in_s=3600)
    gated = Pipeline.objects.get(name="gated")
    PipelineGrant.objects.create(pipeline=gated, user=r1, role="operator")

    hidden_decided = gated_task("private-pipe", starter)
    approvals.task_approve(task_id=hidden_decided.pk, user=r2)
    drive(Run.objects.get(pk=hidden_decided.run_id))
    timed(hidden_decided, opened=now - timedelta(days=9), waited_s=7 * 86400, due_in_s=None)
    hidden_open = gated_task("private-pipe", starter)
    Pipeline.objects.filter(name="private-pipe").update(member_role="viewer")

    acme = Organization.objects.create(name="Acme", slug="acme")
    stranger = type(starter).objects.create_user("stranger", password="x")
    stranger.groups.add(Group.objects.get(name="reviewers"))
    Membership.objects.create(user=stranger, organization=acme, role=Membership.Role.ADMIN)
    foreign = gated_task("gated", None, organization=acme)
    approvals.task_approve(task_id=foreign.pk, user=stranger)
    timed(foreign, opened=two_days_ago, waited_s=5, due_in_s=1)
    # `timed` rewrote history around the services: recount the insights' rollup.
    rollup.rebuild()
    return SimpleNamespace(
        now=now, decided=decided, waiting=waiting, hidden_open=hidden_open, acme=acme
    )
