"""Aggregates for the insights page, computed by the database over what a user operates."""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Count, F, FloatField, Func, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from approvals import rollup
from approvals.models import Decision, DecisionDay, HumanTask, TaskDay
from orgs import selectors as orgs
from pipelines import permissions
from pipelines.models import PipelineVersion, Run

# Time to decision, in seconds: each bucket holds what is under its limit.
DECISION_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("under 1 min", 60),
    ("1 to 5 min", 5 * 60),
    ("5 to 15 min", 15 * 60),
    ("15 to 60 min", 60 * 60),
    ("1 to 4 h", 4 * 3600),
    ("4 to 24 h", 24 * 3600),
    ("1 to 3 days", 3 * 86400),
    ("over 3 days", None),
)
# How long open tasks have waited so far.
AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("under 1 h", 3600),
    ("1 to 4 h", 4 * 3600),
    ("4 to 24 h", 24 * 3600),
    ("1 to 3 days", 3 * 86400),
    ("3 to 7 days", 7 * 86400),
    ("over 7 days", None),
)
# The actions the rates chart shows apart; the rest (submit, choose, expire, escalate)
# count as "other" so the shares add up to the day's decisions.
RATE_ACTIONS = (Decision.Action.APPROVE, Decision.Action.REJECT, Decision.Action.ROLLBACK)
RUN_OUTCOMES = (
    str(Run.Status.SUCCEEDED),
    str(Run.Status.FAILED),
    str(Run.Status.REJECTED),
    str(Run.Status.CANCELLED),
)
# "Who is waited on most" lists this many assignees: the long tail is the CSV's.
WAITING_ROWS = 20


@dataclass(frozen=True)
class Scope:
    """What one request's aggregates cover: an organization, the pipelines the user
    operates there (all of them when `whole_organization`), and a time range."""

    organization_id: int
    pipelines: dict[int, str]
    whole_organization: bool
    start: datetime
    end: datetime  # exclusive
    now: datetime

    @property
    def days(self) -> list[date]:
        first, last = self.start.date(), (self.end - timedelta(microseconds=1)).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def pipeline_name(self, pipeline_id: int | None) -> str:
        return self.pipelines.get(pipeline_id or 0, "(unknown)")


def _org(organization: Any) -> int | None:
    return getattr(organization, "pk", organization)


def operated_pipelines(user: Any, organization: Any) -> dict[int, str]:
    """{id: name} of the organization's pipelines the user operates (an admin: all)."""
    found = permissions.pipelines_for(user, _org(organization), permissions.OPERATOR)
    return dict(found.order_by("name").values_list("pk", "name"))


def may_see(user: Any, organization: Any) -> bool:
    """Whether the user may open the insights page in this organization: its admins, and
    operators of at least one of its pipelines. An admin costs no query."""
    org = _org(organization)
    if orgs.is_admin(user, org):
        return True
    return permissions.pipelines_for(user, org, permissions.OPERATOR).exists()


def scope(
    user: Any,
    organization: Any,
    *,
    pipelines: dict[int, str],
    pipeline: str,
    start: datetime,
    end: datetime,
    now: datetime,
) -> Scope:
    """The scope of a request; `pipelines` is `operated_pipelines`, `pipeline` a name
    among them (the caller has checked it) or "" for all of them."""
    org = _org(organization)
    assert org is not None
    if pipeline:
        chosen = {pk: name for pk, name in pipelines.items() if name == pipeline}
    else:
        chosen = pipelines
    whole = not pipeline and orgs.is_admin(user, org)
    return Scope(org, chosen, whole, start, end, now)


# --- SQL pieces -------------------------------------------------------------------------


class Seconds(Func):
    """Seconds from the second expression to the first, as a float (PostgreSQL, SQLite)."""

    output_field = FloatField()
    arg_joiner = " - "
    template = "EXTRACT(EPOCH FROM (%(expressions)s))::double precision"

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra,
        )


def _tasks(s: Scope) -> QuerySet[HumanTask]:
    tasks = HumanTask.objects.filter(organization_id=s.organization_id)
    if not s.whole_organization:
        tasks = tasks.filter(pipeline_id__in=list(s.pipelines))
    return tasks


def _bucket_counts(
    rows: QuerySet[Any], field: str, buckets: tuple[tuple[str, int | None], ...]
) -> list[tuple[str, int]]:
    """One query: how many rows fall in each bucket of `field` (seconds)."""
    counts: dict[str, Any] = {}
    lower: int | None = None  # the first bucket also takes a clock's small step back
    for n, (_, limit) in enumerate(buckets):
        within = Q() if lower is None else Q(**{f"{field}__gte": lower})
        if limit is not None:
            within &= Q(**{f"{field}__lt": limit})
            lower = limit
        counts[f"b{n}"] = Count("pk", filter=within)
    found = rows.aggregate(**counts)
    return [(label, found[f"b{n}"] or 0) for n, (label, _) in enumerate(buckets)]


# --- sections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionSummary:
    """Time to decision of the tasks decided in a scope: DECISION_BUCKETS' counts, and
    per grouping (pipeline, step, role) rows of how many, p50 and p95 in seconds."""

    buckets: list[tuple[str, int]]
    by: dict[str, list[dict[str, Any]]]


# Each grouping's key columns, of the TaskDay rows `decision_summary` reads.
GROUPINGS = {
    "pipeline": ("pipeline_key",),
    "step": ("pipeline_key", "step_name"),
    "role": ("role_key", "user_key"),
}


def _days(s: Scope) -> dict[str, Any]:
    """The rollups' rows of the scope: its organization, pipelines and days (whole UTC
    days, as the page's range always is)."""
    found: dict[str, Any] = {
        "organization_id": s.organization_id,
        "day__gte": s.start.date(),
        "day__lte": (s.end - timedelta(microseconds=1)).date(),
    }
    if not s.whole_organization:
        found["pipeline_key__in"] = list(s.pipelines)
    return found


def decision_summary(s: Scope) -> DecisionSummary:
    """The histogram and the three percentile tables from the per-day rollup of closed
    tasks (approvals.rollup): counts exact, p50/p95 interpolated within its buckets."""
    rows = TaskDay.objects.filter(**_days(s)).values_list(
        "pipeline_key", "step_name", "role_key", "user_key", "waits"
    )
    # Summed per finest key first (map: one C loop per row), then per grouping.
    finest: dict[tuple[Any, ...], list[int]] = {}
    for pipe, step, role, user, waits in rows:
        key = (pipe, step, role, user)
        before = finest.get(key)
        finest[key] = waits if before is None else list(map(operator.add, before, waits))
    merged: dict[str, dict[tuple[Any, ...], list[int]]] = {name: {} for name in GROUPINGS}
    total = [0] * rollup.BUCKETS
    for (pipe, step, role, user), waits in finest.items():
        columns = {"pipeline_key": pipe, "step_name": step, "role_key": role, "user_key": user}
        total = list(map(operator.add, total, waits))
        for name, keys in GROUPINGS.items():
            key = tuple(columns[c] for c in keys)
            before = merged[name].get(key)
            merged[name][key] = waits if before is None else list(map(operator.add, before, waits))
    names = _names(merged["role"])
    by = {}
    for name, groups in merged.items():
        found: list[dict[str, Any]] = [
            {
                "label": _label(s, name, key, names),
                "decided": sum(waits),
                "p50_s": round(rollup.percentile(waits, 0.5) or 0.0, 1),
                "p95_s": round(rollup.percentile(waits, 0.95) or 0.0, 1),
            }
            for key, waits in groups.items()
        ]
        by[name] = sorted(found, key=lambda r: (-r["p95_s"], r["label"]))
    return DecisionSummary(_named_buckets(total), by)


def _named_buckets(total: list[int]) -> list[tuple[str, int]]:
    """DECISION_BUCKETS' counts: exact, their limits being among the rollup's."""
    counts = [0] * len(DECISION_BUCKETS)
    limits = [limit for _, limit in DECISION_BUCKETS]
    for n, count in enumerate(total):
        low = rollup.bucket_limits(n)[0]
        counts[next(i for i, limit in enumerate(limits) if limit is None or low < limit)] += count
    return [(label, counts[i]) for i, (label, _) in enumerate(DECISION_BUCKETS)]


def _names(groups: dict[tuple[Any, ...], list[int]]) -> tuple[dict[int, str], dict[int, str]]:
    """{id: name} of the roles and {id: username} of the people among the keys."""
    roles = {role for role, _ in groups if role}
    people = {user for _, user in groups if user}
    role_names = dict(Group.objects.filter(pk__in=roles).values_list("pk", "name")) if roles else {}
    usernames = (
        dict(get_user_model().objects.filter(pk__in=people).values_list("pk", "username"))
        if people
        else {}
    )
    return role_names, usernames


def decision_time(s: Scope) -> list[tuple[str, int]]:
    """How many tasks decided in the range took how long, by DECISION_BUCKETS."""
    return decision_summary(s).buckets


def decision_percentiles(s: Scope, by: str) -> list[dict[str, Any]]:
    """Tasks decided in the range grouped by pipeline, step or role: how many, and the
    median (p50) and p95 of their time to decision in seconds, slowest p95 first."""
    return decision_summary(s).by[by]


def _label(
    s: Scope, by: str, key: tuple[Any, ...], names: tuple[dict[int, str], dict[int, str]]
) -> str:
    if by == "pipeline":
        return s.pipeline_name(key[0])
    if by == "step":
        return f"{s.pipeline_name(key[0])} · {key[1]}"
    return _who(names[0].get(key[0]), names[1].get(key[1]))


def _who(role: str | None, username: str | None) -> str:
    """A task's assignee as the page names it: a person first, else a role."""
    if username:
        return f"person: {username}"
    if role:
        return f"role: {role}"
    return "nobody (superusers only)"


def open_by_age(s: Scope) -> list[tuple[str, int]]:
    """Open tasks now, by how long they have waited (not limited to the range)."""
    tasks = (
        _tasks(s).filter(status=HumanTask.Status.OPEN).alias(age=Seconds(s.now, F("created_at")))
    )
    return _bucket_counts(tasks, "age", AGE_BUCKETS)


def deadlines(s: Scope) -> list[dict[str, Any]]:
    """Per pipeline, the tasks whose deadline fell in the range (and has passed): how
    many were decided in time and how many missed it (still open after it, decided after
    it, expired). A task cancelled before its deadline (its run ended) counts in neither."""
    end = min(s.end, s.now)
    tasks = (
        _tasks(s)
        .filter(due_at__gte=s.start, due_at__lt=end)
        .exclude(status=HumanTask.Status.CANCELLED, decided_at__lte=F("due_at"))
        .order_by()
    )
    missed = Q(decided_at__isnull=True) | Q(decided_at__gt=F("due_at"))
    missed |= Q(status=HumanTask.Status.EXPIRED)
    rows = tasks.values("pipeline_id").annotate(due=Count("pk"), missed=Count("pk", filter=missed))
    found = []
    for row in rows:
        due, late = row["due"], row["missed"]
        found.append(
            {
                "pipeline": s.pipeline_name(row["pipeline_id"]),
                "due": due,
                "met": due - late,
                "missed": late,
                "missed_pct": round(100.0 * late / due, 1) if due else 0.0,
            }
        )
    return sorted(found, key=lambda r: (-r["missed"], r["pipeline"]))


def decision_rates(s: Scope) -> list[dict[str, Any]]:
    """Decisions per day (UTC) in the range by action, with each action's share, from
    the per-day rollup of decisions."""
    rows = (
        DecisionDay.objects.filter(**_days(s))
        .order_by()
        .values_list("day", "action")
        .annotate(n=Sum("decisions"))
    )
    counted: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for day, action, n in rows:
        name = action if action in RATE_ACTIONS else "other"
        counted[day][name] += n
    found = []
    for day in s.days:
        row: dict[str, Any] = {"day": day}
        total = sum(counted[day].values())
        for name in (*RATE_ACTIONS, "other"):
            row[str(name)] = counted[day].get(name, 0)
        row["total"] = total
        for name in RATE_ACTIONS:
            row[f"{name}_pct"] = round(100.0 * row[str(name)] / total, 1) if total else 0.0
        found.append(row)
    return found


def waiting_on(s: Scope, limit: int | None = WAITING_ROWS) -> list[dict[str, Any]]:
    """Open tasks per assignee (a person, else a role): how many, how many are overdue,
    and how long the oldest has waited; most tasks first."""
    rows = (
        _tasks(s)
        .filter(status=HumanTask.Status.OPEN)
        .order_by()
        .values("assignee_role__name", "assignee__username")
        .annotate(
            n=Count("pk"),
            overdue=Count("pk", filter=Q(due_at__lt=s.now)),
            oldest=Min("created_at"),
        )
        .order_by("-n", "oldest")
    )
    if limit is not None:
        rows = rows[:limit]
    return [
        {
            "who": _who(row["assignee_role__name"], row["assignee__username"]),
            "open": row["n"],
            "overdue": row["overdue"],
            "oldest_s": max(0.0, round((s.now - row["oldest"]).total_seconds(), 1)),
        }
        for row in rows
    ]


def runs_per_day(s: Scope) -> list[dict[str, Any]]:
    """Runs that finished on each day (UTC) of the range, by outcome."""
    runs = Run.objects.filter(
        organization_id=s.organization_id,
        pipeline_version_id__in=PipelineVersion.objects.filter(
            pipeline_id__in=list(s.pipelines)
        ).values("pk"),
        finished_at__gte=s.start,
        finished_at__lt=s.end,
    )
    counted: dict[date, dict[str, int]] = defaultdict(dict)
    # COUNT(*), not of the key: the index run_version_finished then answers alone.
    rows = runs.order_by().values_list(TruncDate("finished_at"), "status").annotate(n=Count("*"))
    for day, status, n in rows:
        counted[day][status] = n
    found = []
    for day in s.days:
        row: dict[str, Any] = {"day": day}
        for outcome in RUN_OUTCOMES:
            row[outcome] = counted[day].get(outcome, 0)
        row["total"] = sum(counted[day].values())
        found.append(row)
    return found
