"""Django admin for human tasks and their decisions (history: read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from approvals.models import Decision, HumanTask
from orgs.admin import OrganizationScopedAdmin
from pipelines.admin_base import ReadOnlyAdmin, ReadOnlyInline, run_link


class OverdueFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Overdue"), ("no", "Not overdue")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[HumanTask]) -> QuerySet[HumanTask]:
        overdue = {"status": HumanTask.Status.OPEN, "due_at__lt": timezone.now()}
        if self.value() == "yes":
            return queryset.filter(**overdue)
        if self.value() == "no":
            return queryset.exclude(**overdue)
        return queryset


class DecisionInline(ReadOnlyInline):
    model = Decision
    fields = readonly_fields = ("created_at", "user", "action", "comment", "rollback_to", "data")


@admin.register(HumanTask)
class HumanTaskAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "step_name",
        "run_id_link",
        "status",
        "assignee",
        "assignee_role",
        "claimed_by",
        "due_at",
        "created_at",
    )
    list_filter = ("status", "kind", "assignee_role", "assignee", OverdueFilter)
    list_select_related = ("assignee", "assignee_role", "claimed_by")
    search_fields = ("=run__id", "step_name")
    date_hierarchy = "created_at"
    inlines = (DecisionInline,)

    @admin.display(description="run", ordering="run_id")
    def run_id_link(self, obj: HumanTask) -> str:
        return run_link(obj.run_id)


@admin.register(Decision)
class DecisionAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = ("created_at", "task", "user", "action", "rollback_to", "comment")
    list_filter = ("action",)
    list_select_related = ("task", "user")
    search_fields = ("=task__id", "=task__run__id")
