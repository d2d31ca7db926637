"""Aggregates for the insights page, computed by the database over what a user operates."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, F, FloatField, Func, Min, Q, QuerySet
from django.db.models.functions import TruncDate

from approvals.models import Decision, HumanTask
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


def percentile(ordered: list[float], fraction: float) -> float | None:
    """percentile_cont in Python (linear between the two nearest ranks), for SQLite."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _tasks(s: Scope) -> QuerySet[HumanTask]:
    tasks = HumanTask.objects.filter(organization_id=s.organization_id)
    if not s.whole_organization:
        tasks = tasks.filter(pipeline_id__in=list(s.pipelines))
    return tasks


def _decided(s: Scope) -> QuerySet[HumanTask]:
    """Tasks decided in the range, with `waited`: the seconds from opening to decision."""
    return (
        _tasks(s)
        .filter(decided_at__gte=s.start, decided_at__lt=s.end)
        .alias(waited=Seconds(F("decided_at"), F("created_at")))
    )


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


# Each grouping's key columns, of those `decision_summary` reads.
GROUPINGS = {"pipeline": ("p",), "step": ("p", "st"), "role": ("ro", "us")}
# GROUPING(p, st, ro, us) of each grouping set: a bit set for each column not grouped.
GROUPING_BITS = {"pipeline": 0b0111, "step": 0b0011, "role": 0b1100, "all": 0b1111}


def decision_summary(s: Scope) -> DecisionSummary:
    """One read of the decided tasks for the histogram and the three percentile tables:
    on PostgreSQL a single scan with GROUPING SETS; elsewhere the rows, in Python."""
    decided = (
        _decided(s)
        .order_by()
        .values(
            p=F("pipeline_id"),
            st=F("step_name"),
            ro=F("assignee_role__name"),
            us=F("assignee__username"),
            w=F("waited"),
        )
    )
    if connection.vendor == "postgresql":
        counts, groups = _summary_in_sql(decided)
    else:
        counts, groups = _summary_in_python(decided)
    by = {}
    for name, rows in groups.items():
        found: list[dict[str, Any]] = [
            {
                "label": _label(s, name, key),
                "decided": n,
                "p50_s": round(p50 or 0.0, 1),
                "p95_s": round(p95 or 0.0, 1),
            }
            for key, n, p50, p95 in rows
        ]
        by[name] = sorted(found, key=lambda r: (-r["p95_s"], r["label"]))
    buckets = [(label, counts[n]) for n, (label, _) in enumerate(DECISION_BUCKETS)]
    return DecisionSummary(buckets, by)


Groups = dict[str, list[tuple[tuple[Any, ...], int, float | None, float | None]]]


def _bucket_sql() -> list[str]:
    found, lower = [], None
    for _, limit in DECISION_BUCKETS:
        cond = [] if lower is None else [f"w >= {lower}"]
        if limit is not None:
            cond.append(f"w < {limit}")
            lower = limit
        found.append(f"COUNT(*) FILTER (WHERE {' AND '.join(cond) or 'TRUE'})")
    return found


def _summary_in_sql(decided: QuerySet[Any]) -> tuple[list[int], Groups]:
    inner, params = decided.query.sql_with_params()
    # Constants only are written into the SQL (the buckets' limits); the scope's values
    # stay parameters of the inner query.
    sql = (
        "SELECT GROUPING(p, st, ro, us), p, st, ro, us, COUNT(*), "
        "PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY w), "
        "PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY w), "
        + ", ".join(_bucket_sql())
        + f" FROM ({inner}) AS decided"
        " GROUP BY GROUPING SETS ((p), (p, st), (ro, us), ())"
    )
    groups: Groups = {name: [] for name in GROUPINGS}
    counts = [0] * len(DECISION_BUCKETS)
    names = {bits: name for name, bits in GROUPING_BITS.items()}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for bits, p, st, ro, us, n, p50, p95, *buckets in cursor.fetchall():
            name = names[bits]
            if name == "all":
                counts = list(buckets)
                continue
            columns = {"p": p, "st": st, "ro": ro, "us": us}
            key = tuple(columns[c] for c in GROUPINGS[name])
            groups[name].append((key, n, p50, p95))
    return counts, groups


def _summary_in_python(decided: QuerySet[Any]) -> tuple[list[int], Groups]:
    waits: dict[str, dict[tuple[Any, ...], list[float]]] = {
        name: defaultdict(list) for name in GROUPINGS
    }
    counts = [0] * len(DECISION_BUCKETS)
    limits = [limit for _, limit in DECISION_BUCKETS]
    for row in decided.order_by("w"):
        for name, columns in GROUPINGS.items():
            waits[name][tuple(row[c] for c in columns)].append(row["w"])
        counts[next(n for n, limit in enumerate(limits) if limit is None or row["w"] < limit)] += 1
    groups: Groups = {
        name: [(k, len(w), percentile(w, 0.5), percentile(w, 0.95)) for k, w in found.items()]
        for name, found in waits.items()
    }
    return counts, groups


def decision_time(s: Scope) -> list[tuple[str, int]]:
    """How many tasks decided in the range took how long, by DECISION_BUCKETS."""
    return decision_summary(s).buckets


def decision_percentiles(s: Scope, by: str) -> list[dict[str, Any]]:
    """Tasks decided in the range grouped by pipeline, step or role: how many, and the
    median (p50) and p95 of their time to decision in seconds, slowest p95 first."""
    return decision_summary(s).by[by]


def _label(s: Scope, by: str, key: tuple[Any, ...]) -> str:
    if by == "pipeline":
        return s.pipeline_name(key[0])
    if by == "step":
        return f"{s.pipeline_name(key[0])} · {key[1]}"
    return _who(*key)


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
    """Decisions per day (UTC) in the range by action, with each action's share."""
    decisions = Decision.objects.filter(
        organization_id=s.organization_id, created_at__gte=s.start, created_at__lt=s.end
    )
    if not s.whole_organization:
        decisions = decisions.filter(task__pipeline_id__in=list(s.pipelines))
    counted: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = (
        decisions.order_by().values_list(TruncDate("created_at"), "action").annotate(n=Count("pk"))
    )
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
    rows = runs.order_by().values_list(TruncDate("finished_at"), "status").annotate(n=Count("pk"))
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
