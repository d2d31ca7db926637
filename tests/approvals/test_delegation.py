"""Out-of-office delegation: the delegate decides the away person's tasks, on their behalf,
only in the range, only in the organization, and separation of duties holds for both."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from approvals import selectors
from approvals import services as approvals
from approvals.models import Decision, Delegation, HumanTask
from orgs.models import Membership, Organization
from pipelines import events, services
from pipelines.errors import Conflict, InvalidInput, PermissionDenied
from pipelines.models import AuditEntry, Run, SecurityEvent
from tests.approvals.conftest import drive, open_task

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


@pytest.fixture
def heard() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    got: list[tuple[str, dict[str, Any]]] = []
    hook = events.register(lambda event, payload: got.append((event, payload)))
    yield got
    events.unregister(hook)


def gate(name: str, *, by: Any, quorum: int = 1, **config: Any) -> HumanTask:
    """A run of a one-gate pipeline started by `by`, waiting at its task."""
    services.pipeline_create_or_get(
        member_role="starter",
        spec={
            "name": name,
            "steps": [
                {"name": "review", "type": "approval", "config": {"quorum": quorum, **config}}
            ],
        },
    )
    run = drive(services.run_start(pipeline=name, inputs={}, actor=by))
    return open_task(run)


def away(users: dict[str, Any], who: str, to: str, *, start: Any = None, hours: int = 24) -> Any:
    start = start or timezone.now() - HOUR
    return approvals.delegation_set(
        user=users[who],
        organization=Organization.objects.default(),
        delegate=to,
        starts_at=start,
        ends_at=start + timedelta(hours=hours),
    )


def inbox(user: Any) -> list[int]:
    tasks = selectors.inbox_tasks(user, Organization.objects.default(), view="all")
    return [t.pk for t in tasks]


def test_the_delegate_decides_on_behalf_of_who_is_away(
    users, heard, django_capture_on_commit_callbacks
):
    task = gate("personal", by=users["starter"], assignee="r2")
    assert task.pk not in inbox(users["outsider"])
    away(users, "r2", "outsider")
    assert task.pk in inbox(users["outsider"])

    with django_capture_on_commit_callbacks(execute=True):
        approvals.task_approve(task_id=task.pk, user=users["outsider"], comment="covering")

    decision = Decision.objects.get(task=task)
    assert (decision.user, decision.on_behalf_of) == (users["outsider"], users["r2"])
    entry = AuditEntry.objects.filter(run_id=task.run_id, event="task.approved").get()
    assert entry.data["on_behalf_of"] == "r2"
    assert entry.actor == users["outsider"]
    decided = next(payload for event, payload in heard if event == "task.decided")
    assert (decided["decided_by"], decided["on_behalf_of"]) == ("outsider", "r2")
    assert Run.objects.get(pk=task.run_id).status == Run.Status.SUCCEEDED


def test_the_delegate_covers_the_away_persons_roles_too(users):
    task = gate("role", by=users["starter"], assignee_role="reviewers")
    away(users, "r1", "outsider")
    assert task.pk in inbox(users["outsider"])
    approvals.task_reject(task_id=task.pk, user=users["outsider"], comment="not now")
    decision = Decision.objects.get(task=task)
    assert decision.on_behalf_of == users["r1"]


def test_a_reviewer_who_is_also_a_delegate_decides_as_themselves(users):
    task = gate("own", by=users["starter"], assignee_role="reviewers")
    away(users, "r1", "r2")
    approvals.task_approve(task_id=task.pk, user=users["r2"])
    assert Decision.objects.get(task=task).on_behalf_of is None


def test_outside_its_range_a_delegation_gives_nothing(users):
    task = gate("range", by=users["starter"], assignee="r2")
    away(users, "r2", "outsider", start=timezone.now() + 2 * HOUR)
    for state in ("not yet", "expired"):
        assert task.pk not in inbox(users["outsider"]), state
        with pytest.raises(PermissionDenied, match="You may not act on task"):
            approvals.task_approve(task_id=task.pk, user=users["outsider"])
        # Time passes: the range is over.
        Delegation.objects.update(
            starts_at=timezone.now() - 48 * HOUR, ends_at=timezone.now() - HOUR
        )
    assert HumanTask.objects.get(pk=task.pk).status == "open"


def test_cleared_delegation_gives_nothing_and_both_changes_are_recorded(users):
    task = gate("cleared", by=users["starter"], assignee="r2")
    org = Organization.objects.default()
    away(users, "r2", "outsider")
    assert approvals.delegation_clear(user=users["r2"], organization=org) is True
    assert approvals.delegation_clear(user=users["r2"], organization=org) is False
    with pytest.raises(PermissionDenied):
        approvals.task_approve(task_id=task.pk, user=users["outsider"])
    recorded = list(
        SecurityEvent.objects.filter(event__startswith="delegation.")
        .order_by("id")
        .values_list("event", "actor__username")
    )
    assert recorded == [("delegation.set", "r2"), ("delegation.cleared", "r2")]


def test_the_delegate_who_started_the_run_is_refused(users):
    task = gate("sod-delegate", by=users["outsider"], assignee="r2")
    away(users, "r2", "outsider")
    with pytest.raises(PermissionDenied, match="You started this run"):
        approvals.task_approve(task_id=task.pk, user=users["outsider"])
    assert AuditEntry.objects.filter(run_id=task.run_id, event="task.refused").exists()


def test_the_delegate_of_the_person_who_started_the_run_is_refused(users):
    # r2 started the run and is its assignee: r2 may not approve, so nor may r2's cover.
    task = gate("sod-away", by=users["r2"], assignee="r2")
    away(users, "r2", "outsider")
    with pytest.raises(PermissionDenied, match="r2 started this run"):
        approvals.task_approve(task_id=task.pk, user=users["outsider"])
    # Rejecting is not approving one's own work: allowed, as for r2 themselves.
    approvals.task_reject(task_id=task.pk, user=users["outsider"], comment="withdrawn")
    assert Decision.objects.get(task=task).on_behalf_of == users["r2"]


def test_of_two_people_covered_the_one_who_did_not_start_the_run_is_chosen(users):
    task = gate("two-away", by=users["r1"], assignee_role="reviewers")
    away(users, "r1", "outsider")
    away(users, "r2", "outsider")
    approvals.task_approve(task_id=task.pk, user=users["outsider"])
    assert Decision.objects.get(task=task).on_behalf_of == users["r2"]


def test_one_vote_per_person_whoever_casts_it(users):
    task = gate("quorum", by=users["starter"], assignee_role="reviewers", quorum=2)
    away(users, "r1", "outsider")
    approvals.task_approve(task_id=task.pk, user=users["outsider"])
    with pytest.raises(Conflict, match=r"outsider already approved task \d+ on behalf of r1"):
        approvals.task_approve(task_id=task.pk, user=users["r1"])
    with pytest.raises(Conflict, match="You have already approved"):
        approvals.task_approve(task_id=task.pk, user=users["outsider"])
    approvals.task_approve(task_id=task.pk, user=users["r2"])
    assert HumanTask.objects.get(pk=task.pk).status == "completed"


def test_a_person_who_already_voted_is_not_voted_for_again(users):
    task = gate("quorum-2", by=users["starter"], assignee_role="reviewers", quorum=2)
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    away(users, "r1", "outsider")
    with pytest.raises(Conflict, match="r1 has already approved"):
        approvals.task_approve(task_id=task.pk, user=users["outsider"])


def test_a_delegate_of_another_organization_is_refused_and_a_forged_row_gives_nothing(users):
    globex = Organization.objects.create(slug="globex", name="Globex")
    spy = type(users["r1"]).objects.create_user("spy", password="x")
    Membership.objects.create(user=spy, organization=globex, role="admin")
    with pytest.raises(InvalidInput, match="'spy' is not a member of this organization"):
        away(users, "r2", "spy")
    with pytest.raises(InvalidInput, match="'ghost' is not a member of this organization"):
        away(users, "r2", "ghost")
    # Even a row written around the service: the delegate must belong to the task's
    # organization to decide anything there.
    task = gate("forged", by=users["starter"], assignee="r2")
    Delegation.objects.create(
        organization=Organization.objects.default(),
        user=users["r2"],
        delegate=spy,
        starts_at=timezone.now() - HOUR,
        ends_at=timezone.now() + HOUR,
    )
    with pytest.raises(Exception, match="No task"):
        approvals.task_approve(task_id=task.pk, user=spy)
    assert selectors.inbox_tasks(spy, globex, view="all").count() == 0
    assert HumanTask.objects.get(pk=task.pk).status == "open"


def test_a_delegation_ends_with_the_away_persons_membership(users):
    task = gate("left", by=users["starter"], assignee="r2")
    away(users, "r2", "outsider")
    Membership.objects.filter(user=users["r2"]).delete()
    assert task.pk not in inbox(users["outsider"])
    with pytest.raises(PermissionDenied):
        approvals.task_approve(task_id=task.pk, user=users["outsider"])


def test_a_superusers_delegate_gets_only_what_is_assigned_to_them(users, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "x")
    Membership.objects.create(user=root, organization=Organization.objects.default())
    task = gate("root-away", by=users["starter"], assignee="r2")
    away({"root": root}, "root", "outsider")
    assert task.pk not in inbox(users["outsider"])
    with pytest.raises(PermissionDenied):
        approvals.task_approve(task_id=task.pk, user=users["outsider"])


@pytest.mark.parametrize(
    ("to", "start", "hours", "message"),
    [
        ("r2", 2, 0, "The end must come after the start."),
        ("r2", -48, 24, "The end is in the past"),
        ("r2", 0, 24 * 400, "at most 366 days"),
        ("r1", 0, 24, "Name someone else"),
    ],
)
def test_bad_delegations_are_named(users, to, start, hours, message):
    with pytest.raises(InvalidInput, match=message):
        away(users, "r1", to, start=timezone.now() + timedelta(hours=start), hours=hours)
    assert not Delegation.objects.exists()


def test_setting_again_replaces_the_delegate(users):
    away(users, "r1", "r2")
    away(users, "r1", "r3")
    (delegation,) = Delegation.objects.all()
    assert delegation.delegate == users["r3"]
    last = SecurityEvent.objects.filter(event="delegation.set").latest("id")
    assert (last.data or {})["replaced"] == "r2"
