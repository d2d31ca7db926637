"""Per-day counts of decisions and closed tasks, kept by the decision services for the insights."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection
from django.db.models import Count
from django.db.models.functions import TruncDate

from approvals.models import Decision, DecisionDay, HumanTask, TaskDay


def _edges() -> tuple[float, ...]:
    """Upper limits (seconds) of the wait buckets: 1 s, then each of the insights' named
    ranges (1 min, 5 min, 15 min, 1 h, 4 h, 1 day, 3 days, 30 days) cut into equal
    log-scale steps of at most STEP, so the named ranges' counts stay exact. Stored
    histograms depend on these: changing them means recounting (`rebuild`)."""
    named = (1, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 30 * 86400)
    edges: list[float] = [1.0]
    for low, high in itertools.pairwise(named):
        parts = math.ceil(math.log(high / low) / math.log(STEP))
        edges += [low * (high / low) ** (n / parts) for n in range(1, parts)] + [float(high)]
    return tuple(edges)


# Each bucket's upper limit is at most this many times its lower one.
STEP = 1.26
EDGES = _edges()
# Buckets: under 1 s (and a clock's small step back), one per edge, over 30 days.
BUCKETS = len(EDGES) + 1
# How far a value interpolated within a bucket can be from the bucket's middle (±).
PRECISION_PCT = math.ceil(100 * (math.sqrt(max(b / a for a, b in itertools.pairwise(EDGES))) - 1))


def bucket_of(seconds: float) -> int:
    return bisect.bisect_right(EDGES, seconds)


def bucket_limits(n: int) -> tuple[float, float | None]:
    """The bucket's lower and upper limit in seconds (None: open-ended)."""
    low = 0.0 if n == 0 else EDGES[n - 1]
    return low, EDGES[n] if n < len(EDGES) else None


def percentile(histogram: list[int], fraction: float) -> float | None:
    """percentile_cont of the waits counted in `histogram`: linear between the two nearest
    ranks, as PostgreSQL's, each rank's wait estimated within its bucket."""
    total = sum(histogram)
    if not total:
        return None
    position = fraction * (total - 1)
    low = int(position)
    high = min(low + 1, total - 1)
    at_low, at_high = _ranked(histogram, low), _ranked(histogram, high)
    return at_low + (at_high - at_low) * (position - low)


def _ranked(histogram: list[int], rank: int) -> float:
    """The wait of the rank-th (from 0) of the counted waits: the k-th of a bucket's n
    waits is put (k + 1/2)/n of the way through it (log scale; linear in the first
    bucket; the last, open-ended, gives its lower limit)."""
    before = 0
    for n, count in enumerate(histogram):
        if rank < before + count:
            low, high = bucket_limits(n)
            within = (rank - before + 0.5) / count
            if high is None:
                return low
            if low <= 0:
                return high * within
            return float(low * (high / low) ** within)
        before += count
    raise ValueError(f"rank {rank} of {before} waits")


def _day(when: datetime) -> date:
    return when.astimezone(UTC).date()


def _waits_sql(table: str) -> str:
    if connection.vendor == "postgresql":
        return (
            f"jsonb_set({table}.waits, ARRAY[%s]::text[], "
            f"to_jsonb(({table}.waits->>%s::int)::int + 1))"
        )
    at = "'$[' || %s || ']'"
    return f"json_set({table}.waits, {at}, json_extract({table}.waits, {at}) + 1)"


def _json_param() -> str:
    return "%s::jsonb" if connection.vendor == "postgresql" else "%s"


def task_closed(task: HumanTask) -> None:
    """Count a task that just closed (decided, expired or cancelled) in its day's row, in
    the caller's transaction; an upsert, so concurrent closings add up."""
    assert task.decided_at is not None
    n = bucket_of((task.decided_at - task.created_at).total_seconds())
    key = (
        task.organization_id,
        _day(task.decided_at),
        task.pipeline_id or 0,
        task.step_name,
        task.assignee_id or 0,
        task.assignee_role_id or 0,
        task.status,
    )
    pending = _pending.get()
    if pending is not None:
        pending.closed.append((key, n))
        return
    _count_tasks({key: _histogram({n: 1})})


def decided(**fields: Any) -> Decision:
    """Record a decision and count it in its day's row (same transaction)."""
    pending = _pending.get()
    if pending is not None:
        decision = Decision(**fields)
        pending.decisions.append(decision)
        return decision
    decision = Decision.objects.create(**fields)
    _count_decisions([decision])
    return decision


_Key = tuple[Any, ...]


def _histogram(counts: dict[int, int]) -> list[int]:
    return [counts.get(n, 0) for n in range(BUCKETS)]


def _count_tasks(histograms: dict[_Key, list[int]]) -> None:
    """Add closed tasks (a histogram of waits per day's row) in one upsert per statement:
    on PostgreSQL one for all rows, the histograms added bucket by bucket."""
    table = TaskDay._meta.db_table
    columns = "organization_id, day, pipeline_key, step_name, user_key, role_key, status"
    head = f"INSERT INTO {table} ({columns}, tasks, waits) VALUES "
    row = f"(%s, %s, %s, %s, %s, %s, %s, %s, {_json_param()})"
    conflict = f" ON CONFLICT ({columns}) DO UPDATE SET tasks = {table}.tasks + EXCLUDED.tasks, "
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            params: list[Any] = []
            for key, histogram in histograms.items():
                params += [*key, sum(histogram), _json(histogram)]
            added = (
                f"(SELECT jsonb_agg(({table}.waits->>i)::int + (EXCLUDED.waits->>i)::int"
                f" ORDER BY i) FROM generate_series(0, jsonb_array_length({table}.waits) - 1) i)"
            )
            rows = ", ".join([row] * len(histograms))
            cursor.execute(f"{head}{rows}{conflict}waits = {added}", params)
            return
        for key, histogram in histograms.items():  # SQLite: one bucket at a time
            for n, count in enumerate(histogram):
                for _ in range(count):
                    first = _histogram({n: 1})
                    cursor.execute(
                        f"{head}{row}{conflict}waits = {_waits_sql(table)}",
                        [*key, 1, _json(first), str(n), n],
                    )


def _count_decisions(decisions: list[Decision]) -> None:
    counts: dict[_Key, int] = defaultdict(int)
    for decision in decisions:
        key = (
            decision.organization_id,
            _day(decision.created_at),
            decision.task.pipeline_id or 0,
            decision.action,
        )
        counts[key] += 1
    table = DecisionDay._meta.db_table
    rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(counts))
    sql = (
        f"INSERT INTO {table} (organization_id, day, pipeline_key, action, decisions)"
        f" VALUES {rows} ON CONFLICT (organization_id, day, pipeline_key, action)"
        f" DO UPDATE SET decisions = {table}.decisions + EXCLUDED.decisions"
    )
    params = [value for key, count in counts.items() for value in (*key, count)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


class Pending:
    """Decisions and closed tasks of a batch, written when it ends (see `deferred`)."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.closed: list[tuple[_Key, int]] = []

    def mark(self) -> tuple[int, int]:
        return len(self.decisions), len(self.closed)

    def undo(self, mark: tuple[int, int]) -> None:
        """Forget what was added since `mark` (its savepoint was rolled back)."""
        del self.decisions[mark[0] :], self.closed[mark[1] :]

    def write(self) -> None:
        if self.decisions:
            Decision.objects.bulk_create(self.decisions)
            _count_decisions(self.decisions)
        if self.closed:
            buckets: dict[_Key, dict[int, int]] = defaultdict(lambda: defaultdict(int))
            for key, n in self.closed:
                buckets[key][n] += 1
            _count_tasks({key: _histogram(counts) for key, counts in buckets.items()})
        self.decisions, self.closed = [], []


_pending: ContextVar[Pending | None] = ContextVar("rollup_pending", default=None)


@contextmanager
def deferred() -> Iterator[Pending]:
    """Within one transaction deciding many tasks: their Decision rows and day counts are
    kept, then written when the block ends (one INSERT each instead of three statements
    per task), still in that transaction. Nothing in the block reads them back: each
    task's guard reads its votes before the block's first decision."""
    pending = Pending()
    token = _pending.set(pending)
    try:
        yield pending
        pending.write()
    finally:
        _pending.reset(token)


def _json(values: list[int]) -> str:
    return "[" + ",".join(map(str, values)) + "]"


def rebuild(organization_id: int | None = None, models: Any = None) -> tuple[int, int]:
    """Recount both tables from the tasks and decisions (of one organization, or all):
    for the migration that adds them and for rows written around the services (seeds).
    `models` are the migration's (HumanTask, Decision, TaskDay, DecisionDay)."""
    task_model, decision_model, task_day, decision_day = models or (
        HumanTask,
        Decision,
        TaskDay,
        DecisionDay,
    )
    tasks = task_model.objects.filter(decided_at__isnull=False)
    decisions = decision_model.objects.all()
    if organization_id is not None:
        tasks = tasks.filter(organization_id=organization_id)
        decisions = decisions.filter(organization_id=organization_id)
        task_day.objects.filter(organization_id=organization_id).delete()
        decision_day.objects.filter(organization_id=organization_id).delete()
    else:
        task_day.objects.all().delete()
        decision_day.objects.all().delete()
    days: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * BUCKETS)
    columns = (
        "organization_id",
        "pipeline_id",
        "step_name",
        "assignee_id",
        "assignee_role_id",
        "status",
        "created_at",
        "decided_at",
    )
    for org, pipe, step, user, role, status, opened, closed in (
        tasks.order_by().values_list(*columns).iterator(chunk_size=5000)
    ):
        key = (org, _day(closed), pipe or 0, step, user or 0, role or 0, status)
        days[key][bucket_of((closed - opened).total_seconds())] += 1
    task_day.objects.bulk_create(
        (
            task_day(
                organization_id=k[0],
                day=k[1],
                pipeline_key=k[2],
                step_name=k[3],
                user_key=k[4],
                role_key=k[5],
                status=k[6],
                tasks=sum(waits),
                waits=waits,
            )
            for k, waits in days.items()
        ),
        batch_size=1000,
    )
    counted = (
        decisions.order_by()
        .values_list(
            "organization_id", TruncDate("created_at", tzinfo=UTC), "task__pipeline_id", "action"
        )
        .annotate(n=Count("pk"))
    )
    decision_day.objects.bulk_create(
        (
            decision_day(organization_id=o, day=d, pipeline_key=p or 0, action=a, decisions=n)
            for o, d, p, a, n in counted
        ),
        batch_size=1000,
    )
    return len(days), decision_day.objects.count()
