"""Django admin for schedules (changes through the services) and their firings (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from orgs.admin import OrganizationScopedAdmin
from pipelines.admin_base import ReadOnlyAdmin
from pipelines.errors import FireflyError
from schedules import services
from schedules.models import Firing, Schedule


def _set_enabled(admin_: admin.ModelAdmin, request: HttpRequest, queryset: Any, on: bool) -> None:
    done = 0
    for schedule in queryset.select_related("pipeline").order_by("pk"):
        try:
            services.schedule_update(
                schedule_id=schedule.pk,
                pipeline=schedule.pipeline.name,
                actor=request.user,
                organization=schedule.organization_id,
                enabled=on,
            )
            done += 1
        except FireflyError as exc:
            admin_.message_user(request, f"{schedule.name}: {exc.message}", messages.ERROR)
    if done:
        admin_.message_user(request, f"{done} schedule(s) {'resumed' if on else 'paused'}.")


@admin.register(Schedule)
class ScheduleAdmin(OrganizationScopedAdmin):
    """Schedules are made in a spec or through the API; here they are seen, paused,
    resumed and deleted, each through the services (checked and audited)."""

    list_display = (
        "name",
        "pipeline",
        "organization",
        "timing",
        "enabled",
        "next_fire_at",
        "overlap",
        "missed",
        "origin",
    )
    list_filter = ("organization", "enabled", "origin", "overlap", "missed")
    list_select_related = ("pipeline", "organization")
    search_fields = ("name", "pipeline__name")
    actions = ("pause", "resume")
    readonly_fields = (
        "organization",
        "pipeline",
        "name",
        "cron",
        "timezone",
        "every_s",
        "inputs",
        "enabled",
        "overlap",
        "missed",
        "origin",
        "definition",
        "next_fire_at",
        "created_by",
        "created_at",
        "updated_at",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Pause the selected schedules", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        _set_enabled(self, request, queryset, False)

    @admin.action(description="Resume the selected schedules", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        _set_enabled(self, request, queryset, True)

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
        services.schedule_delete(
            schedule_id=obj.pk,
            pipeline=obj.pipeline.name,
            actor=request.user,
            organization=obj.organization_id,
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset.select_related("pipeline").order_by("pk"):
            try:
                self.delete_model(request, schedule)
            except FireflyError as exc:
                self.message_user(request, f"{schedule.name}: {exc.message}", messages.ERROR)


@admin.register(Firing)
class FiringAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    """Each slot a schedule came due at: the run it started, or why it started none."""

    list_display = ("schedule", "slot_at", "status", "reason", "missed", "run", "previous_run")
    list_filter = ("status", "reason", "organization")
    list_select_related = ("schedule",)
    search_fields = ("schedule__name",)
    date_hierarchy = "slot_at"
    raw_id_fields = ("run", "previous_run")
