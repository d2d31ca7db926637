"""Human-task services driven in-process: guards, refusals, claims, deadlines, email."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from approvals import services
from approvals.models import Decision, HumanTask
from approvals.services import AlreadyDecided
from orgs.models import Membership, Organization
from pipelines import services as pipelines
from pipelines.errors import Conflict, InvalidInput, PermissionDenied, SpecError
from pipelines.models import AuditEntry, Run
from tests.approvals.conftest import drive, open_task

pytestmark = pytest.mark.django_db


def gate(name: str = "gated", **config: object) -> str:
    review = {"assignee_role": "reviewers", "instructions": "Check the build.", **config}
    pipelines.pipeline_create(
        member_role="starter",
        spec={
            "name": name,
            "steps": [
                {"name": "build", "type": "noop"},
                {"name": "review", "type": "approval", "after": ["build"], "config": review},
                {"name": "ship", "type": "noop", "after": ["review"]},
            ],
        },
    )
    return name


def waiting_run(users: dict, **config: Any) -> Run:
    run = pipelines.run_start(pipeline=gate(**config), inputs={"v": 1}, actor=users["starter"])
    run = drive(run)
    assert run.status == Run.Status.WAITING
    return run


def test_a_gate_opens_a_task_with_its_context(users):
    run = waiting_run(users)
    task = open_task(run)
    assert (task.kind, task.step_name, task.assignee_role.name) == (
        "approval",
        "review",
        "reviewers",
    )
    assert task.instructions == "Check the build."
    assert task.context == {"inputs": {"v": 1}, "upstream": {"build": {}}}
    assert AuditEntry.objects.filter(run=run, event="task.opened").count() == 1


def test_approve_completes_the_step_and_the_run_moves_on(users):
    run = waiting_run(users)
    task = services.task_approve(task_id=open_task(run).pk, user=users["r1"], comment="fine")
    assert task.status == HumanTask.Status.COMPLETED
    run = drive(run)
    assert run.status == Run.Status.SUCCEEDED
    review = run.steps.get(step_name="review")
    assert review.outputs["decision"] == "approved"
    assert review.outputs["approvers"] == ["r1"]
    assert review.outputs["comment"] == "fine"


def test_the_runs_starter_may_not_approve_it_and_the_refusal_is_audited(users):
    run = waiting_run(users)
    users["starter"].groups.add(users["r1"].groups.get())
    with pytest.raises(PermissionDenied, match="started this run"):
        services.task_approve(task_id=open_task(run).pk, user=users["starter"])
    refused = AuditEntry.objects.get(run=run, event="task.refused")
    assert refused.actor_name == "starter"
    assert "started this run" in refused.error_message
    assert not Decision.objects.exists()


def test_self_approval_when_the_step_allows_it(users):
    run = waiting_run(users, assignee="starter", allow_self_approval=True)
    services.task_approve(task_id=open_task(run).pk, user=users["starter"])
    assert drive(run).status == Run.Status.SUCCEEDED


def test_someone_outside_the_role_is_refused(users):
    run = waiting_run(users)
    with pytest.raises(PermissionDenied, match="role reviewers"):
        services.task_approve(task_id=open_task(run).pk, user=users["outsider"])
    assert AuditEntry.objects.filter(run=run, event="task.refused").count() == 1
    assert open_task(run).decisions.count() == 0


def test_a_decided_task_refuses_later_decisions_naming_the_winner(users):
    run = waiting_run(users)
    task = open_task(run)
    services.task_approve(task_id=task.pk, user=users["r1"])
    with pytest.raises(AlreadyDecided, match=r"already decided by r1 at \d{4}-\d\d-\d\d"):
        services.task_reject(task_id=task.pk, user=users["r2"], comment="no")


def test_reject_needs_a_reason_and_ends_the_run(users):
    run = waiting_run(users)
    task = open_task(run)
    with pytest.raises(InvalidInput, match="Say why"):
        services.task_reject(task_id=task.pk, user=users["r1"], comment=" ")
    services.task_reject(task_id=task.pk, user=users["r1"], comment="tests are red")
    run.refresh_from_db()
    assert run.status == Run.Status.REJECTED
    assert "tests are red" in run.error
    assert run.steps.get(step_name="ship").status == "pending"


def test_quorum_counts_distinct_people_and_one_reject_vetoes(users):
    run = waiting_run(users, quorum=2)
    task = open_task(run)
    services.task_approve(task_id=task.pk, user=users["r1"])
    with pytest.raises(Conflict, match="already approved"):
        services.task_approve(task_id=task.pk, user=users["r1"])
    task.refresh_from_db()
    assert task.status == HumanTask.Status.OPEN
    services.task_approve(task_id=task.pk, user=users["r2"])
    assert drive(run).status == Run.Status.SUCCEEDED
    assert run.steps.get(step_name="review").outputs["approvers"] == ["r1", "r2"]

    vetoed = pipelines.run_start(pipeline="gated", inputs={}, actor=users["starter"])
    vetoed = drive(vetoed)
    task = open_task(vetoed)
    services.task_approve(task_id=task.pk, user=users["r1"])
    services.task_reject(task_id=task.pk, user=users["r3"], comment="veto")
    vetoed.refresh_from_db()
    assert vetoed.status == Run.Status.REJECTED


def test_claimed_tasks_belong_to_the_claimer_until_released(users):
    run = waiting_run(users)
    task = open_task(run)
    services.task_claim(task_id=task.pk, user=users["r1"])
    with pytest.raises(PermissionDenied, match="claimed by r1"):
        services.task_approve(task_id=task.pk, user=users["r2"])
    with pytest.raises(PermissionDenied, match="claimed by r1"):
        services.task_claim(task_id=task.pk, user=users["r2"])
    services.task_unclaim(task_id=task.pk, user=users["r1"])
    services.task_approve(task_id=task.pk, user=users["r2"])
    events = AuditEntry.objects.filter(run=run, event__startswith="task.").values_list(
        "event", flat=True
    )
    assert list(events.order_by("seq")) == [
        "task.opened",
        "task.claimed",
        "task.refused",
        "task.refused",
        "task.unclaimed",
        "task.approved",
    ]


def test_only_organization_admins_reassign(users):
    run = waiting_run(users)
    task = open_task(run)
    with pytest.raises(PermissionDenied, match="Only the organization's admins"):
        services.task_reassign(task_id=task.pk, user=users["r1"], assignee="outsider")
    services.task_reassign(task_id=task.pk, user=users["boss"], assignee="outsider")
    services.task_approve(task_id=task.pk, user=users["outsider"])
    assert drive(run).status == Run.Status.SUCCEEDED


def test_roll_back_only_to_a_completed_upstream_step(users):
    run = waiting_run(users)
    with pytest.raises(InvalidInput, match="choose one of: build"):
        services.task_rollback(task_id=open_task(run).pk, user=users["r1"], to_step="ship")


def overdue(run: Run) -> HumanTask:
    task = open_task(run)
    HumanTask.objects.filter(pk=task.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    return task


def test_deadline_rejects(users):
    run = waiting_run(users, timeout_hours=1)
    task = open_task(run)
    assert task.due_at > timezone.now() + timedelta(minutes=59)
    assert services.expire_overdue() == 0
    overdue(run)
    assert services.expire_overdue() == 1
    run.refresh_from_db()
    task.refresh_from_db()
    assert (run.status, task.status) == (Run.Status.REJECTED, HumanTask.Status.EXPIRED)
    assert AuditEntry.objects.filter(run=run, event="task.expired").exists()


def test_deadline_approves(users):
    run = waiting_run(users, timeout_hours=1, on_timeout="approve")
    overdue(run)
    services.expire_overdue()
    assert drive(run).status == Run.Status.SUCCEEDED
    assert run.steps.get(step_name="review").outputs["approvers"] == []


def test_deadline_escalates_and_notifies_the_group(
    users, django_user_model, django_capture_on_commit_callbacks
):
    boss = users["boss"]
    boss.groups.create(name="managers")
    run = waiting_run(users, timeout_hours=1, on_timeout="escalate:managers")
    task = overdue(run)
    with django_capture_on_commit_callbacks(execute=True):
        services.expire_overdue()
    task.refresh_from_db()
    assert (task.status, task.assignee_role.name, task.due_at) == ("open", "managers", None)
    assert [m.to for m in mail.outbox] == [["boss@example.com"]]
    assert "escalated" in mail.outbox[0].subject
    services.task_approve(task_id=task.pk, user=boss)
    assert drive(run).status == Run.Status.SUCCEEDED


def test_a_decision_after_the_deadline_is_told_who_closed_the_task(users):
    run = waiting_run(users, timeout_hours=1)
    task = overdue(run)
    services.expire_overdue()
    with pytest.raises(AlreadyDecided, match="expired by the deadline"):
        services.task_approve(task_id=task.pk, user=users["r1"])


def test_a_new_task_emails_the_roles_members_with_a_link(users, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = waiting_run(users)
    task = open_task(run)
    # One message each: the action links in it are signed for its recipient alone.
    assert [m.to for m in mail.outbox] == [
        ["r1@example.com"],
        ["r2@example.com"],
        ["r3@example.com"],
    ]
    for message in mail.outbox:
        assert f"/tasks/{task.pk}/" in message.body
        assert "Check the build." in message.body


def test_an_interactive_step_needs_someone_to_act():
    with pytest.raises(SpecError, match="assignee"):
        pipelines.pipeline_create(
            member_role="starter",
            spec={"name": "nobody", "steps": [{"name": "r", "type": "approval", "config": {}}]},
        )
    with pytest.raises(SpecError, match="options"):
        pipelines.pipeline_create(
            member_role="starter",
            spec={
                "name": "nochoice",
                "steps": [{"name": "c", "type": "choice", "config": {"assignee": "x"}}],
            },
        )


def test_a_role_member_of_another_organization_gets_no_mail(
    users, django_user_model, django_capture_on_commit_callbacks
):
    """Groups span organizations; a task's mail goes only to members of its organization."""
    other = Organization.objects.create(slug="elsewhere", name="Elsewhere")
    stranger = django_user_model.objects.create_user("stranger", email="stranger@example.com")
    stranger.groups.add(users["r1"].groups.get(name="reviewers"))
    Membership.objects.create(user=stranger, organization=other)
    with django_capture_on_commit_callbacks(execute=True):
        waiting_run(users)
    sent_to = sorted(address for message in mail.outbox for address in message.to)
    assert sent_to == ["r1@example.com", "r2@example.com", "r3@example.com"]
