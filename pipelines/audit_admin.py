"""Django admin of the audit trail: its large changelist, each entry's verification."""

from __future__ import annotations

import hmac
from datetime import tzinfo as TzInfo
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from orgs.admin import OrganizationScopedAdmin
from pipelines.admin_base import ReadOnlyAdmin, run_link
from pipelines.admin_paging import IndexedValuesFilter, LargeTableAdmin, indexed_datetimes
from pipelines.audit import intact
from pipelines.models import (
    AuditEntry,
    ImmutableQuerySet,
)

# --- audit trail ----------------------------------------------------------------------
# The audit table holds millions of rows: its changelist uses the large-table machinery
# of pipelines/admin_paging.py, so that a page costs the same at 1M rows as at 100.


class AuditChangeListQuerySet(ImmutableQuerySet):
    """The audit changelist's queryset: immutable rows, and a date drill-down by index."""

    def datetimes(
        self,
        field_name: str,
        kind: str,
        order: str = "ASC",
        tzinfo: TzInfo | None = None,
    ) -> Any:
        found = indexed_datetimes(self, field_name, kind, order, tzinfo)
        if found is None:
            return super().datetimes(field_name, kind, order, tzinfo)  # type: ignore[arg-type]
        return found


def entry_verifies(entry: AuditEntry) -> bool:
    """Whether the entry's stored content still matches its HMAC (no query)."""
    return intact(entry)


def audit_entry_link(entry_id: int, label: str) -> SafeString:
    url = reverse("admin:pipelines_auditentry_change", args=[entry_id])
    return format_html('<a href="{}">{}</a>', url, label)


def failed_mark(why: str = "") -> SafeString:
    """The mark of an entry that fails verification, red in the list and the page."""
    return format_html('<strong class="audit-failed">&#x2717; FAILED</strong>{}', why)


@admin.register(AuditEntry)
class AuditEntryAdmin(OrganizationScopedAdmin, LargeTableAdmin, ReadOnlyAdmin):
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
    search_fields = ["=run__id", "=step_name", "=actor_name"]
    search_help_text = "A run id, an exact step name, or who acted (their user name)."
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    # Only the indexed order: sorting by another column would sort the whole table.
    sortable_by = ["created_at"]
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

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Nine columns of evidence need the width the app list would take (the
        # breadcrumbs still lead back); firefly-admin.css lets the cells wrap.
        extra_context = {**(extra_context or {}), "is_nav_sidebar_enabled": False}
        return super().changelist_view(request, extra_context)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # Exact matches only, each served by an index: (run, seq), (step_name, ...) and
        # (actor_name, ...).
        # A substring search (Django's default icontains) would scan every row.
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(step_name=term) | Q(actor_name=term)
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
