"""Django admin: pipelines, runs with their steps and handoffs, checkpoints and audit trail."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import tzinfo as TzInfo
from itertools import pairwise
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Field, Max, Min, Model, Q, QuerySet, Value
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from pipelines.audit import entry_hash
from pipelines.models import (
    AuditEntry,
    Checkpoint,
    HandoffEnvelope,
    ImmutableQuerySet,
    Pipeline,
    PipelineVersion,
    Run,
    SecurityEvent,
    StepRun,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is never edited by hand: no add, change or delete, for superusers too."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VersionInline(ReadOnlyInline):
    model = PipelineVersion
    fields = readonly_fields = ("number", "created_at", "created_by")


@admin.register(Pipeline)
class PipelineAdmin(ReadOnlyAdmin):
    list_display = ["name", "description", "created_at"]
    search_fields = ["name"]
    inlines = [VersionInline]


@admin.register(PipelineVersion)
class PipelineVersionAdmin(ReadOnlyAdmin):
    list_display = ["pipeline", "number", "created_at", "created_by"]
    list_filter = ["pipeline"]
    list_select_related = ["pipeline", "created_by"]


def _change_link(model: str, label: str, pk: int | None) -> str:
    if pk is None:
        return "-"
    url = reverse(f"admin:pipelines_{model}_change", args=[pk])
    return format_html('<a href="{}">{} {}</a>', url, label, pk)


def run_link(run_id: int | None) -> str:
    return _change_link("run", "run", run_id)


class StepInline(ReadOnlyInline):
    model = StepRun
    fields = readonly_fields = (
        "step_name",
        "generation",
        "attempt",
        "status",
        "started_at",
        "finished_at",
        "error",
    )


def handoff_link(envelope_id: int | None) -> str:
    return _change_link("handoffenvelope", "handoff", envelope_id)


class ChildRunInline(ReadOnlyInline):
    model = Run
    fk_name = "parent"
    verbose_name = "child run"
    fields = readonly_fields = ("pipeline_version", "status", "created_at", "finished_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return super().get_queryset(request).select_related("pipeline_version__pipeline")


class EnvelopeInline(ReadOnlyInline):
    model = HandoffEnvelope
    fk_name = "origin_run"
    verbose_name = "handoff"
    fields = readonly_fields = (
        "origin_step",
        "target_pipeline",
        "child_run_link",
        "wait",
        "status",
        "queued_at",
        "accepted_at",
        "acknowledged_at",
        "acknowledged_by",
        "decision",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[HandoffEnvelope]:
        return super().get_queryset(request).select_related("acknowledged_by", "child_run")

    @admin.display(description="child run")
    def child_run_link(self, obj: HandoffEnvelope) -> str:
        return run_link(obj.child_run_id)


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "pipeline_version", "status", "created_by", "created_at", "finished_at"]
    list_filter = ["status", "pipeline_version__pipeline"]
    list_select_related = ["pipeline_version__pipeline", "created_by"]
    search_fields = ["=id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = ["handed_off_by", "is_finishing"]
    inlines = [StepInline, ChildRunInline, EnvelopeInline]

    @admin.display(description="handed off by")
    def handed_off_by(self, obj: Run) -> str:
        if obj.parent_id is None:
            return "-"
        envelope = HandoffEnvelope.objects.filter(child_run=obj).values_list("pk", flat=True)
        return format_html("{} ({})", run_link(obj.parent_id), handoff_link(envelope.first()))

    @admin.display(description="on_finish running", boolean=True)
    def is_finishing(self, obj: Run) -> bool:
        return obj.is_finishing


class HandoffStatusFilter(admin.SimpleListFilter):
    """The envelope's status, which the model derives from its timestamps."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(status, status) for status in ("queued", "accepted", "acknowledged")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        open_ = queryset.filter(acknowledged_at__isnull=True)
        if self.value() == "queued":
            return open_.filter(child_run__started_at__isnull=True)
        if self.value() == "accepted":
            return open_.filter(child_run__started_at__isnull=False)
        if self.value() == "acknowledged":
            return queryset.filter(acknowledged_at__isnull=False)
        return queryset


@admin.register(HandoffEnvelope)
class HandoffEnvelopeAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "origin_run_link",
        "origin_step",
        "target_pipeline",
        "child_run_link",
        "wait",
        "status",
        "queued_at",
        "accepted_at",
        "acknowledged_at",
        "acknowledged_by",
    ]
    list_filter = [HandoffStatusFilter, "wait"]
    list_select_related = ["acknowledged_by", "child_run"]
    search_fields = ["target_pipeline", "=origin_run__id"]
    search_help_text = "A target pipeline, or an origin run id."
    show_full_result_count = False
    readonly_fields = (
        "origin_run_link",
        "origin_step",
        "origin_step_run",
        "key",
        "target_pipeline",
        "payload",
        "wait",
        "child_run_link",
        "status",
        "queued_at",
        "accepted_at",
        "acknowledged_at",
        "acknowledged_by",
        "decision",
    )
    fields = readonly_fields

    @admin.display(description="origin run", ordering="origin_run_id")
    def origin_run_link(self, obj: HandoffEnvelope) -> str:
        return run_link(obj.origin_run_id)

    @admin.display(description="child run", ordering="child_run_id")
    def child_run_link(self, obj: HandoffEnvelope) -> str:
        return run_link(obj.child_run_id)


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdmin):
    list_display = [
        "step_name",
        "run_id_link",
        "generation",
        "attempt",
        "status",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status"]
    search_fields = ["=run__id", "step_name"]
    show_full_result_count = False

    @admin.display(description="run", ordering="run_id")
    def run_id_link(self, obj: StepRun) -> str:
        return run_link(obj.run_id)


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = [
        "seq",
        "run_id_link",
        "kind",
        "step_name",
        "generation",
        "status",
        "paused",
        "created_at",
    ]
    list_filter = ["kind", "paused"]
    search_fields = ["=run__id", "step_name"]
    show_full_result_count = False

    @admin.display(description="run", ordering="run_id")
    def run_id_link(self, obj: Checkpoint) -> str:
        return run_link(obj.run_id)


@admin.register(SecurityEvent)
class SecurityEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "event", "actor_name", "address", "reason"]
    list_filter = ["event"]
    search_fields = ["actor_name", "=address"]
    date_hierarchy = "created_at"
    show_full_result_count = False


# --- audit trail ----------------------------------------------------------------------
# The audit table holds millions of rows, so every query its changelist makes is an
# index probe or a scan bounded by the page: no COUNT(*) and no SELECT DISTINCT over
# the whole table, and no query per row. A page costs the same at 1M rows as at 100.

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


class AuditPaginator(Paginator):
    """Counts the audit changelist without COUNT(*) over the table.

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


class AuditChangeListQuerySet(ImmutableQuerySet):
    """The audit changelist's queryset, whose `datetimes` makes the date drill-down cheap.

    The admin's date_hierarchy lists the years, months or days that hold entries with
    `queryset.datetimes(field, kind)`: SELECT DISTINCT date_trunc(...) over every matching
    row, a full scan of the table for the year level. Here the first and last entry come
    from the index (two probes), and each year, month or day between them is checked with
    one LIMIT 1 probe, all in one UNION ALL query: at most 31 probes for a month.
    Filtering by a date still uses Django's range lookups on the indexed column.
    """

    def datetimes(
        self,
        field_name: str,
        kind: str,
        order: str = "ASC",
        tzinfo: TzInfo | None = None,
    ) -> Any:
        features = connections[self.db].features
        # SQLite cannot LIMIT the parts of a UNION; its tables are small anyway.
        if (
            kind not in ("year", "month", "day")
            or not features.supports_slicing_ordering_in_compound
        ):
            return super().datetimes(field_name, kind, order, tzinfo)  # type: ignore[arg-type]
        queryset = self.order_by()
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
            return super().datetimes(field_name, kind, order, tzinfo)  # type: ignore[arg-type]
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


def entry_verifies(entry: AuditEntry) -> bool:
    """Whether the entry's stored content still matches its HMAC (no query)."""
    return hmac.compare_digest(entry_hash(entry), entry.hash)


def audit_entry_link(entry_id: int, label: str) -> SafeString:
    url = reverse("admin:pipelines_auditentry_change", args=[entry_id])
    return format_html('<a href="{}">{}</a>', url, label)


def failed_mark(why: str = "") -> SafeString:
    """The mark of an entry that fails verification, red in the list and the page."""
    return format_html('<strong class="audit-failed">&#x2717; FAILED</strong>{}', why)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "run_id_link",
        "pipeline",
        "step_name",
        "event",
        "actor_name",
        "status",
        "latency_ms",
        "verified",
    ]
    list_filter = [
        ("event", IndexedValuesFilter),
        ("status", IndexedValuesFilter),
        "pipeline",
        ("actor_name", IndexedValuesFilter),
    ]
    # The run column shows run_id only, so only the pipeline (its name) is joined.
    list_select_related = ["pipeline"]
    search_fields = ["=run__id", "=step_name"]
    search_help_text = "A run id or an exact step name."
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    # Only the indexed order: sorting by another column would sort the whole table.
    sortable_by = ["created_at"]
    show_full_result_count = False
    # Facets run one COUNT per filter choice over the filtered rows.
    show_facets = admin.ShowFacets.NEVER
    readonly_fields = (
        "verification",
        "run_id_link",
        "pipeline",
        "seq",
        "chain_links",
        "step_name",
        "event",
        "actor",
        "actor_name",
        "status",
        "latency_ms",
        "started_at",
        "completed_at",
        "created_at",
        "error_message",
        "pause_reason",
        "inputs",
        "outputs",
        "data",
        "prev_hash",
        "hash",
    )
    fields = readonly_fields

    class Media:
        # The FAILED mark's colour: the Content-Security-Policy forbids style attributes.
        css = {"all": ["firefly-admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEntry]:
        queryset = super().get_queryset(request)
        return AuditChangeListQuerySet(
            model=AuditEntry, query=queryset.query.chain(), using=queryset.db
        )

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
        return AuditPaginator(queryset, per_page, orphans, allow_empty_first_page, limit=limit)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # Exact matches only, each served by an index: (run, seq) and (step_name, ...).
        # A substring search (Django's default icontains) would scan every row.
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(step_name=term)
        if term.isascii() and term.isdigit() and len(term) < 19:
            match |= Q(run_id=int(term))
        return queryset.filter(match), False

    @admin.display(description="run", ordering="run_id")
    def run_id_link(self, obj: AuditEntry) -> str:
        return run_link(obj.run_id)

    @admin.display(description="HMAC")
    def verified(self, obj: AuditEntry) -> SafeString:
        if entry_verifies(obj):
            return format_html('<span title="{}">&#x2713;</span>', "HMAC verifies")
        return failed_mark()

    @admin.display(description="verification")
    def verification(self, obj: AuditEntry) -> SafeString:
        if entry_verifies(obj):
            return format_html("&#x2713; {}", "the stored content matches its HMAC")
        return failed_mark(
            ": the stored content does not match its HMAC; the entry was altered after it "
            "was written (or the audit key is not the one it was signed with). "
            "`manage.py verify_audit` checks the whole chain."
        )

    @admin.display(description="chain")
    def chain_links(self, obj: AuditEntry) -> SafeString:
        """Links to the entries before and after this one in its chain, found by the
        unique (run, seq) or (pipeline, seq) index; and whether the link to the previous
        entry holds (its hash is this entry's prev_hash)."""
        chain = AuditEntry.objects.filter(seq__in=[obj.seq - 1, obj.seq + 1])
        if obj.run_id is not None:
            chain = chain.filter(run_id=obj.run_id)
        else:
            chain = chain.filter(run__isnull=True, pipeline_id=obj.pipeline_id)
        neighbours = {
            seq: (pk, digest) for pk, seq, digest in chain.values_list("pk", "seq", "hash")
        }
        before = neighbours.get(obj.seq - 1)
        after = neighbours.get(obj.seq + 1)
        if before is not None:
            linked = hmac.compare_digest(before[1], obj.prev_hash)
            previous = format_html(
                "{} ({})",
                audit_entry_link(before[0], f"\u2190 previous #{obj.seq - 1}"),
                "link holds" if linked else failed_mark(": its hash is not this prev_hash"),
            )
        elif obj.seq <= 1:
            previous = format_html("{}", "first entry")
        else:
            previous = failed_mark(f": previous entry #{obj.seq - 1} is missing")
        following = (
            audit_entry_link(after[0], f"next #{obj.seq + 1} \u2192")
            if after is not None
            else format_html("{}", "last entry")
        )
        return format_html("{} &middot; {}", previous, following)
