"""Notifications people keep on: their preferences, the requester's news, digests and
deadline reminders, driven through the beat's own functions."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import digests, emails, preferences
from approvals import services as approvals
from approvals.models import HumanTask, QueuedNotification, TaskReminder
from orgs.models import Membership
from pipelines import services
from pipelines.errors import SpecError
from tests.approvals.conftest import drive, open_task

pytestmark = pytest.mark.django_db

ALL = {
    "email": True,
    "new_task": True,
    "due_soon": True,
    "task_decided": True,
    "run_finished": True,
}


def gate(users: dict[str, Any], name: str = "gated", **config: Any) -> HumanTask:
    services.pipeline_create_or_get(
        member_role="starter",
        spec={
            "name": name,
            "steps": [
                {
                    "name": "review",
                    "type": "approval",
                    "config": {"assignee_role": "reviewers", **config},
                }
            ],
        },
    )
    return open_task(drive(services.run_start(pipeline=name, inputs={}, actor=users["starter"])))


def to(address: str) -> list[Any]:
    return [m for m in mail.outbox if m.to == [f"{address}@example.com"]]


def wants(user: Any, frequency: str = "immediate", **changes: bool) -> None:
    preferences.preferences_set(user=user, frequency=frequency, **{**ALL, **changes})


def test_each_reviewer_hears_of_a_new_task_as_they_chose(users, django_capture_on_commit_callbacks):
    wants(users["r1"], new_task=False)
    wants(users["r2"], "daily")
    wants(users["r3"], email=False)
    with django_capture_on_commit_callbacks(execute=True):
        task = gate(users)
    assert to("r1") == to("r2") == to("r3") == []
    (queued,) = QueuedNotification.objects.all()
    assert (queued.user, queued.task, queued.event) == (users["r2"], task, "task.opened")


def test_the_requester_hears_each_gates_outcome_and_the_runs_end(
    users, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        task = gate(users)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approvals.task_approve(task_id=task.pk, user=users["r1"])
    subjects = [m.subject for m in to("starter")]
    assert f"[Firefly] Run {task.run_id}, step review: completed by r1" in subjects
    assert f"[Firefly] Run {task.run_id} of gated succeeded" in subjects
    # The decider is not told of their own decision; the other reviewers hear nothing.
    assert to("r1") == to("r2") == []


def test_a_requester_who_turned_outcomes_off_hears_only_the_end(
    users, django_capture_on_commit_callbacks
):
    wants(users["starter"], task_decided=False)
    with django_capture_on_commit_callbacks(execute=True):
        task = gate(users)
        approvals.task_reject(task_id=task.pk, user=users["r1"], comment="no")
    assert [m.subject for m in to("starter")] == [f"[Firefly] Run {task.run_id} of gated rejected"]


def test_an_hourly_digest_is_one_message_with_one_link_per_task(
    users, django_capture_on_commit_callbacks, settings
):
    settings.FIREFLY_BASE_URL = "https://firefly.example"
    wants(users["r1"], "hourly")
    with django_capture_on_commit_callbacks(execute=True):
        first = gate(users, "one")
        second = gate(users, "two")
        # Reassigned news about the first task: still one line for it.
        approvals.task_approve(task_id=first.pk, user=users["r2"])
    assert to("r1") == []
    now = timezone.now()
    assert digests.digests_send(now) == 1
    (digest,) = to("r1")
    assert digest.subject == "[Firefly] Your digest: 2 updates"
    links = re.findall(r"https://firefly.example/tasks/(\d+)/", digest.body)
    assert sorted(map(int, links)) == sorted([first.pk, second.pk])
    html = digest.alternatives[0][0]
    assert f'href="https://firefly.example/tasks/{second.pk}/"' in html
    # Nothing more to send; then news within the hour waits for the hour.
    assert digests.digests_send(now) == 0
    with django_capture_on_commit_callbacks(execute=True):
        gate(users, "three")
    assert digests.digests_send(now + timedelta(minutes=20)) == 0
    assert digests.digests_send(now + timedelta(minutes=61)) == 1
    assert len(to("r1")) == 2


def test_a_daily_digest_waits_a_day_and_drops_what_no_longer_concerns_them(
    users, django_capture_on_commit_callbacks
):
    wants(users["r2"], "daily")
    with django_capture_on_commit_callbacks(execute=True):
        gate(users, "one")
    now = timezone.now()
    assert digests.digests_send(now) == 1
    with django_capture_on_commit_callbacks(execute=True):
        gate(users, "two")
    assert digests.digests_send(now + timedelta(hours=23)) == 0
    # r2 leaves the organization: its news is not mailed to them any more.
    Membership.objects.filter(user=users["r2"]).delete()
    assert digests.digests_send(now + timedelta(hours=25)) == 0
    assert len(to("r2")) == 1
    assert not QueuedNotification.objects.filter(sent_at__isnull=True).exists()


def test_a_reminder_before_the_deadline_is_sent_once(users, django_capture_on_commit_callbacks):
    wants(users["r3"], due_soon=False)
    with django_capture_on_commit_callbacks(execute=True):
        task = gate(users, timeout_hours=10, remind_before_hours=2)
    mail.outbox.clear()
    assert task.remind_at == task.due_at - timedelta(hours=2)
    now = timezone.now()
    assert digests.reminders_send(now) == 0
    later = now + timedelta(hours=8, minutes=30)
    assert digests.reminders_send(later) == 1
    assert digests.reminders_send(later) == 0
    assert digests.reminders_send(later + timedelta(hours=1)) == 0
    subjects = {m.to[0]: m.subject for m in mail.outbox}
    assert subjects == {
        "r1@example.com": f"[Firefly] Approval is due soon: review (run {task.run_id})",
        "r2@example.com": f"[Firefly] Approval is due soon: review (run {task.run_id})",
    }
    # A reminder carries the same signed action links as the first message.
    assert "/email/" in to("r1")[0].body
    assert TaskReminder.objects.filter(task=task).count() == 1


def test_no_reminder_for_a_decided_task_or_after_the_deadline(users):
    decided = gate(users, "decided", timeout_hours=10, remind_before_hours=2)
    approvals.task_approve(task_id=decided.pk, user=users["r1"])
    late = gate(users, "late", timeout_hours=10, remind_before_hours=2)
    assert digests.reminders_send(timezone.now() + timedelta(hours=11)) == 0
    assert not TaskReminder.objects.filter(task__in=[decided, late]).exists()


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"remind_before_hours": 2}, "remind_before_hours needs timeout_hours"),
        ({"remind_before_hours": 5, "timeout_hours": 5}, "must be less than timeout_hours"),
    ],
)
def test_a_reminder_must_come_before_its_deadline(users, config, says):
    with pytest.raises(SpecError, match=says):
        gate(users, "bad", **config)


def test_preferences_are_checked(users):
    with pytest.raises(Exception, match="not a frequency"):
        preferences.preferences_set(user=users["r1"], frequency="weekly", **ALL)
    assert preferences.route(users["r1"], "task.opened") == preferences.NOW


def test_telling_a_role_of_a_new_task_reads_its_members_preferences_in_one_query(
    users, django_user_model
):
    """A task for a role of many reviewers costs the same queries as one for three."""
    task = gate(users)
    wants(users["r2"], "daily")

    def queries_telling() -> int:
        mail.outbox.clear()
        with CaptureQueriesContext(connection) as seen:
            emails.email_assignees("task.opened", task)
        return len(seen)

    queries_telling()  # once first: what a process looks up once is not counted
    few = queries_telling()
    assert sorted(m.to[0] for m in mail.outbox) == ["r1@example.com", "r3@example.com"]
    reviewers = users["r1"].groups.get()
    org = Membership.objects.get(user=users["r1"]).organization
    for i in range(20):
        more = django_user_model.objects.create_user(f"extra{i}", email=f"extra{i}@example.com")
        more.groups.add(reviewers)
        Membership.objects.create(user=more, organization=org, role=Membership.Role.MEMBER)
        if i % 2:
            wants(more, new_task=False)
    many = queries_telling()
    # Each person still hears as they chose: the ten who turned new tasks off hear nothing,
    # r2's news goes to their digest (a row each time they are told).
    assert len(mail.outbox) == 2 + 10
    assert QueuedNotification.objects.filter(user=users["r2"], task=task).count() == 3
    assert many == few
