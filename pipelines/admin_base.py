"""The admin's building blocks: read-only admins and inlines, links to a row's admin page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html


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

    def visible(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """A selector's rows, or none for who may not view them (as Django's own queryset)."""
        return queryset if self.has_view_or_change_permission(request) else queryset.none()


def change_link(model: str, label: str, pk: int | None) -> str:
    if pk is None:
        return "-"
    url = reverse(f"admin:pipelines_{model}_change", args=[pk])
    return format_html('<a href="{}">{} {}</a>', url, label, pk)


def run_link(run_id: int | None) -> str:
    return change_link("run", "run", run_id)
