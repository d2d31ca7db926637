"""Django admin: pipelines and versions, runs with their steps, checkpoints and audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from pipelines.models import AuditEntry, Checkpoint, Pipeline, PipelineVersion, Run, StepRun


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


def run_link(run_id: int | None) -> str:
    if run_id is None:
        return "-"
    url = reverse("admin:pipelines_run_change", args=[run_id])
    return format_html('<a href="{}">run {}</a>', url, run_id)


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


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "pipeline_version", "status", "created_by", "created_at", "finished_at"]
    list_filter = ["status", "pipeline_version__pipeline"]
    list_select_related = ["pipeline_version__pipeline", "created_by"]
    search_fields = ["=id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    inlines = [StepInline]


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
    ]
    list_filter = ["event", "status", "pipeline"]
    list_select_related = ["pipeline"]
    search_fields = ["=run__id", "step_name"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="run", ordering="run_id")
    def run_id_link(self, obj: AuditEntry) -> str:
        return run_link(obj.run_id)
