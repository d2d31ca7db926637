"""Read queries for the reviewer pages: the inbox and one task with its history."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models import F, Prefetch, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from approvals.models import Decision, Delegation, HumanTask, TaskComment
from firefly_site.metrics import AGE_BUCKETS
from orgs import selectors as orgs
from orgs.models import Membership
from pipelines import selectors as pipeline_selectors


def _org(organization: Any) -> int | None:
    return getattr(organization, "pk", organization)


def covering(user: Any, organization: Any, now: Any = None) -> QuerySet[Delegation]:
    """The delegations in force now that name the user as delegate, from people who are
    still active members of the organization (a delegation outlives neither)."""
    org = _org(organization)
    if org is None:
        return Delegation.objects.none()
    return Delegation.objects.filter(
        organization_id=org,
        delegate_id=user.pk,
        starts_at__lte=now or timezone.now(),
        ends_at__gt=now or timezone.now(),
        user__is_active=True,
        user__memberships__organization_id=org,
    )


def delegation_of(user: Any, organization: Any) -> Delegation | None:
    """The user's own delegation in the organization (in force, to come, or past)."""
    org = _org(organization)
    if org is None:
        return None
    return (
        Delegation.objects.filter(organization_id=org, user_id=user.pk)
        .select_related("delegate")
        .first()
    )


def covering_now(user: Any, organization: Any) -> list[Delegation]:
    """Whom the user stands in for now, with until when."""
    return list(covering(user, organization).select_related("user").order_by("ends_at"))


def for_user(user: Any, organization: Any) -> Q:
    """The organization's tasks this user may decide: assigned to them or to one of their
    roles, or, as a delegate, to someone away or one of their roles (superusers: all; a
    delegate does not inherit that). `guards.decides` in SQL; nothing for a non-member."""
    org = _org(organization)
    if not orgs.is_member(user, org):
        return Q(pk__in=[])
    if user.is_superuser:
        return Q(organization_id=org)
    # Subqueries keep "mine, my roles', and those of whom I cover" one SQL statement.
    away = covering(user, org).values("user_id")
    return Q(organization_id=org) & (
        Q(assignee=user)
        | Q(assignee_role__in=user.groups.values("pk"))
        | Q(assignee__in=away)
        | Q(assignee_role__in=Group.objects.filter(user__in=away).values("pk"))
    )


def visible(user: Any, organization: Any) -> Q:
    """The organization's tasks the user may open (`guards.view_task` in SQL): those they
    may decide, and those of the runs they may see."""
    org = _org(organization)
    if orgs.is_admin(user, org):
        return Q(organization_id=org)
    runs = pipeline_selectors.visible_runs(user, org).values("pk")
    return for_user(user, org) | (Q(organization_id=org) & Q(run__in=runs))


# The inbox's views: (name, label). "mine" is the default.
INBOX_VIEWS = (
    ("mine", "For me"),
    ("claimed", "Claimed by me"),
    ("unassigned", "Unassigned"),
    ("all", "All I may decide"),
)
# Longer search terms are cut to this many characters.
SEARCH_MAX = 100


def _claimed(now: Any = None) -> Q:
    """A claim that has not lapsed (`guards.claim_holder` in SQL)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.FIREFLY_CLAIM_TTL_S)
    return Q(claimed_by__isnull=False, claimed_at__gt=cutoff)


def _unclaimed(now: Any = None) -> Q:
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.FIREFLY_CLAIM_TTL_S)
    return Q(claimed_by__isnull=True) | Q(claimed_at__isnull=True) | Q(claimed_at__lte=cutoff)


def inbox_view(user: Any, organization: Any, view: str = "mine") -> Q:
    """One of INBOX_VIEWS as a filter, always within `for_user`:

    mine: what the user may decide and nobody else holds (theirs to take now);
    claimed: what the user holds; unassigned: for one of the user's roles, with no
    person assigned and no claim; all: everything the user may decide, claimed or not.
    An unknown view is "mine".
    """
    allowed = for_user(user, organization)
    if view == "all":
        return allowed
    if view == "claimed":
        return allowed & _claimed() & Q(claimed_by=user)
    if view == "unassigned":
        roles = Q() if user.is_superuser else Q(assignee_role__isnull=False)
        return allowed & roles & Q(assignee__isnull=True) & _unclaimed()
    return allowed & (_unclaimed() | Q(claimed_by=user))


def search_term(text: str) -> str:
    """A search term as searched: without NUL characters (PostgreSQL refuses them in
    text), trimmed, at most SEARCH_MAX characters."""
    return text.replace("\x00", "").strip()[:SEARCH_MAX]


def inbox_tasks(
    user: Any,
    organization: Any,
    *,
    pipeline: str = "",
    kind: str = "",
    sort: str = "due",
    view: str = "mine",
    search: str = "",
) -> QuerySet[HumanTask]:
    """Open tasks of one inbox view, ready to list without more queries. `search` finds
    the tasks whose run inputs contain it, as text, in any case; LIKE's wildcards in it
    match themselves."""
    tasks = (
        HumanTask.objects.filter(inbox_view(user, organization, view), status=HumanTask.Status.OPEN)
        .select_related("claimed_by", "assignee", "assignee_role")
        .prefetch_related(pipeline_selectors.runs_by_key())
        .defer("context", "form_schema")
    )
    if pipeline:
        tasks = tasks.filter(run__pipeline_version__pipeline__name=pipeline)
    if kind:
        tasks = tasks.filter(kind=kind)
    term = search_term(search)
    if term:
        # icontains escapes % and _ (and the escape character) in the term.
        tasks = tasks.alias(inputs_text=Cast("run__inputs", TextField())).filter(
            inputs_text__icontains=term
        )
    if sort == "new":
        return tasks.order_by("-created_at", "-id")
    return tasks.order_by(F("due_at").asc(nulls_last=True), "created_at", "id")


def reassign_choices(organization_id: int) -> tuple[list[str], list[str]]:
    """The organization's members' usernames and the roles (groups) their members are
    in, for the reassign form."""
    members = Membership.objects.filter(organization_id=organization_id)
    usernames = list(members.order_by("user__username").values_list("user__username", flat=True))
    roles = (
        Group.objects.filter(user__memberships__organization_id=organization_id)
        .distinct()
        .order_by("name")
        .values_list("name", flat=True)
    )
    return usernames, list(roles)


def open_task_count(user: Any, organization: Any) -> int:
    """The nav's count: the inbox's default view."""
    return HumanTask.objects.filter(
        inbox_view(user, organization), status=HumanTask.Status.OPEN
    ).count()


def decided_by(user: Any, organization: Any) -> QuerySet[Decision]:
    """The decisions the user made in the organization, newest first, with their task and
    its pipeline.

    The page of decisions is read from its own table alone (the index on user,
    organization and time serves it), then its tasks by key with their pipelines: under
    row-level security the planner misjudges a join through tasks and runs and read every
    decision of the organization before sorting (seconds at 100,000)."""
    page_tasks = HumanTask.objects.only("id", "step_name", "run_id", "pipeline_id").select_related(
        "pipeline"
    )
    return (
        Decision.objects.filter(Q(organization_id=_org(organization)), user=user)
        .only("id", "task_id", "action", "comment", "rollback_to", "created_at", "on_behalf_of")
        .select_related("on_behalf_of")
        .prefetch_related(Prefetch("task", queryset=page_tasks))
        .order_by("-created_at", "-id")
    )


def tasks(user: Any, organization: Any) -> QuerySet[HumanTask]:
    """Tasks the user may open, newest first, with the names the API shows."""
    return (
        HumanTask.objects.filter(visible(user, organization))
        .select_related("assignee", "assignee_role", "claimed_by", "decided_by")
        .prefetch_related(pipeline_selectors.runs_by_key())
        .order_by("-created_at", "-id")
    )


def task_detail(user: Any, organization: Any, task_id: int) -> HumanTask | None:
    return (
        HumanTask.objects.filter(visible(user, organization))
        .select_related(
            "run__pipeline_version__pipeline",
            "run__created_by",
            "assignee",
            "assignee_role",
            "claimed_by",
            "decided_by",
        )
        .filter(pk=task_id)
        .first()
    )


def task_reloaded(task_id: int) -> HumanTask:
    """A task the caller has already found visible, read again after a change to it."""
    return HumanTask.objects.select_related(
        "run__pipeline_version__pipeline", "assignee", "assignee_role", "claimed_by", "decided_by"
    ).get(pk=task_id)


def task_decisions(task: HumanTask) -> QuerySet[Decision]:
    return task.decisions.select_related("user", "on_behalf_of").order_by("created_at", "id")


def task_comments(task: HumanTask) -> QuerySet[TaskComment]:
    """A task's thread, oldest first (the caller found the task visible)."""
    return task.comments.select_related("author").order_by("created_at", "id")


def run_open_tasks(run_id: int) -> list[dict[str, Any]]:
    """A run's open tasks, for its unsettled work (pipelines.services.finishing)."""
    rows = HumanTask.objects.filter(run_id=run_id, status=HumanTask.Status.OPEN).values(
        "id", "step_name", "kind", "due_at"
    )
    return [
        {"id": r["id"], "step": r["step_name"], "kind": r["kind"], "due_at": r["due_at"]}
        for r in rows
    ]


def task_gauges() -> Iterator[GaugeMetricFamily]:
    """Open tasks by pipeline and how long they have waited, at most (firefly_open_tasks)."""
    gauge = GaugeMetricFamily(
        "firefly_open_tasks",
        "Open human tasks by pipeline and how long they have waited (at most)",
        labels=["pipeline", "age"],
    )
    now = timezone.now()
    waiting: Counter[tuple[str, str]] = Counter()
    opened = HumanTask.objects.filter(status=HumanTask.Status.OPEN).values_list(
        "run__pipeline_version__pipeline__name", "created_at"
    )
    for pipeline, created_at in opened.iterator(chunk_size=2000):
        age = now - created_at
        bucket = next(name for name, limit in AGE_BUCKETS if limit is None or age <= limit)
        waiting[(pipeline, bucket)] += 1
    for (pipeline, bucket), count in sorted(waiting.items()):
        gauge.add_metric([pipeline, bucket], count)
    yield gauge
