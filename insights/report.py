"""The insights page's sections: each a table (shown, and its CSV) and the chart drawn from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.utils.safestring import SafeString

from approvals import rollup
from insights import charts, selectors
from insights.charts import Series
from insights.selectors import Scope
from pipelines.templatetags.firefly_time import duration


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    # How the page shows a value: text, count, seconds (as a wait), pct, day.
    kind: str = "count"


@dataclass
class Section:
    name: str
    title: str
    note: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    chart: SafeString | None = None
    cells: list[list[tuple[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # (kind, text) per cell in column order; the CSV keeps the raw `rows`.
        self.cells = [
            [(c.kind, _shown(c.kind, row[c.key])) for c in self.columns] for row in self.rows
        ]


def _shown(kind: str, value: Any) -> str:
    if kind == "seconds":
        return _wait(value)
    if kind == "pct":
        return f"{value:g} %"
    if kind == "day":
        return f"{value:%Y-%m-%d}"
    return str(value)


def _wait(seconds: float) -> str:
    return duration(int(seconds * 1000)) or "0 s"


def _count(value: float) -> str:
    return f"{value:g}"


def _day_label(row: dict[str, Any]) -> str:
    return f"{row['day']:%m-%d}"


def _every(days: int) -> int:
    """Label one day in `every`: about eight labels fit under the chart."""
    return max(1, (days + 7) // 8)


class Figures:
    """A scope and what more than one section reads of it, read once."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    @cached_property
    def decisions(self) -> selectors.DecisionSummary:
        return selectors.decision_summary(self.scope)


def decision_time(f: Figures) -> Section:
    counts = f.decisions.buckets
    total = sum(n for _, n in counts)
    rows: list[dict[str, Any]] = [{"bucket": label, "decided": n} for label, n in counts]
    return Section(
        "decision_time",
        "Time to decision",
        "Tasks decided in the range, by how long they waited from opening to decision.",
        [Column("bucket", "Waited", "text"), Column("decided", "Tasks decided")],
        rows,
        charts.columns(
            f"Time to decision: {total} tasks decided, in {len(rows)} ranges of waiting time",
            [r["bucket"] for r in rows],
            [Series("tasks", [r["decided"] for r in rows])],
            unit=_count,
        ),
    )


PERCENTILE_TITLES = {
    "pipeline": ("Time to decision by pipeline", "Pipeline"),
    "step": ("Time to decision by step", "Pipeline · step"),
    "role": ("Time to decision by assignee", "Assigned to"),
}


def decision_percentiles(f: Figures, by: str) -> Section:
    rows = f.decisions.by[by]
    title, key_title = PERCENTILE_TITLES[by]
    return Section(
        f"time_by_{by}",
        title,
        "Median (p50) and 95th percentile (p95) of the time from opening to decision, "
        "slowest p95 first. Counts are exact; p50 and p95 are approximate, from buckets of "
        f"±{rollup.PRECISION_PCT} %.",
        [
            Column("label", key_title, "text"),
            Column("decided", "Tasks decided"),
            Column("p50_s", "p50", "seconds"),
            Column("p95_s", "p95", "seconds"),
        ],
        rows,
        charts.bars(
            f"{title}: p50 and p95 for {len(rows)} groups",
            [r["label"] for r in rows],
            [Series("p50", [r["p50_s"] for r in rows]), Series("p95", [r["p95_s"] for r in rows])],
            unit=_wait,
        )
        if rows
        else None,
    )


def open_age(f: Figures) -> Section:
    s = f.scope
    counts = selectors.open_by_age(s)
    rows: list[dict[str, Any]] = [{"age": label, "open": n} for label, n in counts]
    return Section(
        "open_age",
        "Open tasks by age",
        "Tasks open now, by how long they have waited so far (whatever the date range).",
        [Column("age", "Waiting for", "text"), Column("open", "Open tasks")],
        rows,
        charts.columns(
            f"Open tasks by age: {sum(n for _, n in counts)} open tasks in {len(rows)} age ranges",
            [r["age"] for r in rows],
            [Series("open tasks", [r["open"] for r in rows])],
            unit=_count,
        ),
    )


def deadlines(f: Figures) -> Section:
    s = f.scope
    rows = selectors.deadlines(s)
    return Section(
        "deadlines",
        "Deadlines missed",
        "Tasks whose deadline fell in the range: decided in time, or missed (decided late, "
        "expired, or still open).",
        [
            Column("pipeline", "Pipeline", "text"),
            Column("due", "Deadlines"),
            Column("met", "Met"),
            Column("missed", "Missed"),
            Column("missed_pct", "Missed", "pct"),
        ],
        rows,
        charts.bars(
            f"Deadlines met and missed in {len(rows)} pipelines",
            [r["pipeline"] for r in rows],
            [
                Series("met", [r["met"] for r in rows]),
                Series("missed", [r["missed"] for r in rows]),
            ],
            unit=_count,
        )
        if rows
        else None,
    )


def decision_rates(f: Figures) -> Section:
    s = f.scope
    rows = selectors.decision_rates(s)
    names = ("approve", "reject", "rollback", "other")
    return Section(
        "decision_rates",
        "Decisions per day",
        "Approvals, rejections and roll backs each day (UTC), with their share of the "
        "day's decisions.",
        [
            Column("day", "Day", "day"),
            *(Column(n, n.capitalize()) for n in names),
            Column("total", "Total"),
            Column("approve_pct", "Approved", "pct"),
            Column("reject_pct", "Rejected", "pct"),
            Column("rollback_pct", "Rolled back", "pct"),
        ],
        rows,
        charts.columns(
            f"Decisions per day over {len(rows)} days: "
            f"{sum(r['total'] for r in rows)} decisions by action",
            [_day_label(r) for r in rows],
            [Series(n, [r[n] for r in rows]) for n in names],
            every=_every(len(rows)),
            unit=_count,
        ),
    )


def waiting_on(f: Figures, limit: int | None = selectors.WAITING_ROWS) -> Section:
    rows = selectors.waiting_on(f.scope, limit)
    return Section(
        "waiting_on",
        "Who is waited on most",
        "Open tasks per assignee (a person, else a role), with the oldest one's wait.",
        [
            Column("who", "Assigned to", "text"),
            Column("open", "Open tasks"),
            Column("overdue", "Overdue"),
            Column("oldest_s", "Oldest waiting", "seconds"),
        ],
        rows,
        charts.bars(
            f"Open tasks of the {len(rows)} assignees waited on most",
            [r["who"] for r in rows],
            [Series("open tasks", [r["open"] for r in rows])],
            unit=_count,
        )
        if rows
        else None,
    )


def runs(f: Figures) -> Section:
    s = f.scope
    rows = selectors.runs_per_day(s)
    return Section(
        "runs",
        "Runs per day by outcome",
        "Runs that finished each day (UTC), by how they ended.",
        [
            Column("day", "Day", "day"),
            *(Column(o, o.capitalize()) for o in selectors.RUN_OUTCOMES),
            Column("total", "Total"),
        ],
        rows,
        charts.columns(
            f"Runs per day over {len(rows)} days: {sum(r['total'] for r in rows)} runs by outcome",
            [_day_label(r) for r in rows],
            [Series(o, [r[o] for r in rows]) for o in selectors.RUN_OUTCOMES],
            every=_every(len(rows)),
            unit=_count,
        ),
    )


SECTIONS: dict[str, Callable[[Figures], Section]] = {
    "decision_time": decision_time,
    "time_by_pipeline": lambda f: decision_percentiles(f, "pipeline"),
    "time_by_step": lambda f: decision_percentiles(f, "step"),
    "time_by_role": lambda f: decision_percentiles(f, "role"),
    "open_age": open_age,
    "deadlines": deadlines,
    "decision_rates": decision_rates,
    "waiting_on": waiting_on,
    "runs": runs,
}


def page(s: Scope) -> list[Section]:
    figures = Figures(s)
    return [build(figures) for build in SECTIONS.values()]


def export(s: Scope, name: str) -> Section:
    """One section for its CSV: every row (the page lists the top ones of some)."""
    if name == "waiting_on":
        return waiting_on(Figures(s), limit=None)
    return SECTIONS[name](Figures(s))
