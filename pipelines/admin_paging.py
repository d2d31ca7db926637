"""Admin changelists for tables of millions of rows: estimated counts, index-only filters."""

# Every query such a changelist makes is an index probe or a scan bounded by the page:
# no COUNT(*) and no SELECT DISTINCT over the whole table, and no query per row.

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import tzinfo as TzInfo
from itertools import pairwise
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Field, Max, Min, Model, QuerySet, Value
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

# Up to this many matching rows are counted exactly; past it the count says "more than".
EXACT_COUNT_LIMIT = 10_000
# Filter choices listed per column (a loose index scan costs one probe per value).
MAX_FILTER_CHOICES = 200
# Date drill-down buckets checked in one query; beyond that, Django's own DISTINCT.
MAX_DATE_BUCKETS = 400


class ApproximateCount(int):
    """A row count that is an estimate or a lower bound, and says so where it is shown."""

    label: str

    def __new__(cls, value: int, label: str) -> ApproximateCount:
        count = super().__new__(cls, value)
        count.label = label
        return count

    def __str__(self) -> str:
        return self.label


def estimated_rows(model: type[Model], using: str) -> int:
    """PostgreSQL's planner estimate of a table's rows (kept by ANALYZE); -1 if unknown."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return -1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [connection.ops.quote_name(model._meta.db_table)],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else -1


class EstimatedCountPaginator(Paginator):
    """Counts a large changelist without COUNT(*) over the table.

    Unfiltered, the count is the planner's estimate (one catalog lookup). Filtered, rows
    are counted up to `limit` only (`SELECT count(*) FROM (... LIMIT n)`), which reads at
    most `limit` index entries, and a larger result shows as "more than <limit>".
    """

    def __init__(
        self, queryset: QuerySet[Any], *args: Any, limit: int = EXACT_COUNT_LIMIT, **kwargs: Any
    ) -> None:
        super().__init__(queryset, *args, **kwargs)
        self.queryset = queryset
        self.limit = limit

    @cached_property
    def count(self) -> int:
        queryset = self.queryset
        if not queryset.query.where:
            estimate = estimated_rows(queryset.model, queryset.db)
            # A small or never analyzed table (reltuples -1 or 0) is cheap to count.
            if estimate > self.limit:
                return ApproximateCount(estimate, f"about {estimate:,}")
        counted: int = queryset.order_by().values("pk")[: self.limit + 1].count()
        if counted > self.limit:
            return ApproximateCount(self.limit, f"more than {self.limit:,}")
        return counted


class IndexedValuesFilter(admin.FieldListFilter):
    """One choice per distinct value of a column, found by a loose index scan.

    Django's AllValuesFieldListFilter runs SELECT DISTINCT over the whole table on every
    page: a full scan at a million rows (PostgreSQL 15 has no skip scan). This recursive
    query jumps from each value to the next through an index led by the column, one
    probe per distinct value. The column must lead an index (see AuditEntry.Meta).
    """

    def __init__(
        self,
        field: Field[Any, Any],
        request: HttpRequest,
        params: dict[str, Any],
        model: type[Model],
        model_admin: admin.ModelAdmin[Any],
        field_path: str,
    ) -> None:
        self.lookup_kwarg = f"{field_path}__exact"
        self.lookup_val = params.get(self.lookup_kwarg)
        self.model = model
        super().__init__(field, request, params, model, model_admin, field_path)

    def expected_parameters(self) -> list[str | None]:
        return [self.lookup_kwarg]

    def values(self) -> list[str]:
        connection = connections[self.model._default_manager.db]
        assert self.field.column is not None
        table = connection.ops.quote_name(self.model._meta.db_table)
        column = connection.ops.quote_name(self.field.column)
        sql = f"""
            WITH RECURSIVE v(value) AS (
                SELECT min({column}) FROM {table}
                UNION ALL
                SELECT (SELECT min({column}) FROM {table} WHERE {column} > v.value)
                FROM v WHERE v.value IS NOT NULL
            )
            SELECT value FROM v WHERE value IS NOT NULL LIMIT %s
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [MAX_FILTER_CHOICES])
            return [str(value) for (value,) in cursor.fetchall()]

    def choices(self, changelist: ChangeList) -> Iterator[Any]:
        yield {
            "selected": self.lookup_val is None,
            "query_string": changelist.get_query_string(remove=[self.lookup_kwarg]),
            "display": "All",
        }
        for value in self.values():
            yield {
                "selected": self.lookup_val is not None and value in self.lookup_val,
                "query_string": changelist.get_query_string({self.lookup_kwarg: value}),
                "display": value or "(blank)",
            }


def _truncate(moment: datetime, kind: str) -> datetime:
    """The naive local start of the year, month or day holding `moment`."""
    start = moment.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    if kind in ("month", "year"):
        start = start.replace(day=1)
    if kind == "year":
        start = start.replace(month=1)
    return start


def _advance(start: datetime, kind: str) -> datetime:
    if kind == "day":
        return start + timedelta(days=1)
    if kind == "month":
        return (start + timedelta(days=32)).replace(day=1)
    return start.replace(year=start.year + 1)


def indexed_datetimes(
    queryset: QuerySet[Any],
    field_name: str,
    kind: str,
    order: str = "ASC",
    tzinfo: TzInfo | None = None,
) -> list[datetime] | None:
    """`queryset.datetimes(field_name, kind)` for a date drill-down, read from an index.

    The admin's date_hierarchy lists the years, months or days that hold entries with
    `queryset.datetimes(field, kind)`: SELECT DISTINCT date_trunc(...) over every matching
    row, a full scan of the table for the year level. Here the first and last entry come
    from the index (two probes), and each year, month or day between them is checked with
    one LIMIT 1 probe, all in one UNION ALL query: at most 31 probes for a month.
    Filtering by a date still uses Django's range lookups on the indexed column.

    None when the plain DISTINCT is the better query (or the only one the database has).
    """
    features = connections[queryset.db].features
    # SQLite cannot LIMIT the parts of a UNION; its tables are small anyway.
    if kind not in ("year", "month", "day") or not features.supports_slicing_ordering_in_compound:
        return None
    queryset = queryset.order_by()
    bounds = queryset.aggregate(first=Min(field_name), last=Max(field_name))
    if bounds["first"] is None:
        return []
    zone = tzinfo or timezone.get_current_timezone()
    start = _truncate(timezone.localtime(bounds["first"], zone), kind)
    last = timezone.localtime(bounds["last"], zone).replace(tzinfo=None)
    edges = [start]
    while edges[-1] <= last and len(edges) <= MAX_DATE_BUCKETS:
        edges.append(_advance(edges[-1], kind))
    if len(edges) > MAX_DATE_BUCKETS:
        return None
    aware = [timezone.make_aware(edge, zone) for edge in edges]
    probes = [
        queryset.filter(**{f"{field_name}__gte": low, f"{field_name}__lt": high})
        .annotate(bucket=Value(i))
        .values_list("bucket", flat=True)[:1]
        for i, (low, high) in enumerate(pairwise(aware))
    ]
    found = set(probes[0].union(*probes[1:], all=True)) if len(probes) > 1 else set(probes[0])
    buckets = [aware[i] for i in sorted(found)]
    return buckets if order == "ASC" else buckets[::-1]


class LargeTableAdmin(admin.ModelAdmin):
    """A ModelAdmin whose changelist never counts the whole table."""

    show_full_result_count = False
    # Facets run one COUNT per filter choice over the filtered rows.
    show_facets = admin.ShowFacets.NEVER

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        try:
            page = max(1, int(request.GET.get(PAGE_VAR, 1)))
        except ValueError:
            page = 1
        # Count a little past the page asked for, so that its page links stay valid.
        limit = max(EXACT_COUNT_LIMIT, (page + 10) * per_page)
        return EstimatedCountPaginator(
            queryset, per_page, orphans, allow_empty_first_page, limit=limit
        )
