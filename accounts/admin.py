"""Django admin for organizations and their members; member changes go through the services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts import services
from orgs.models import Membership, Organization
from orgs.selectors import administered
from pipelines.errors import FireflyError


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    # An id and a lookup, not a list of every user of the platform.
    raw_id_fields = ("user",)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    """Superusers add organizations; staff see and edit those they administer."""

    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    inlines = (MembershipInline,)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The slug names the organization in events and headers: fixed once made.
        return ("slug", "created_at") if obj is not None else ("created_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(pk__in=administered(request.user))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Every run, task and audit entry points at it (PROTECT): never deleted here.
        return False

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        organization = form.instance
        address = request.META.get("REMOTE_ADDR")
        common = {"organization": organization, "actor": request.user, "address": address}
        formset.save(commit=False)
        calls: list[tuple[Any, dict[str, Any]]] = []
        for membership in formset.deleted_objects:
            calls.append((services.membership_remove, {"membership_id": membership.pk}))
        for membership, _fields in formset.changed_objects:
            calls.append(
                (
                    services.membership_set_role,
                    {"membership_id": membership.pk, "role": membership.role},
                )
            )
        for membership in formset.new_objects:
            calls.append(
                (
                    services.membership_add,
                    {"username": membership.user.get_username(), "role": membership.role},
                )
            )
        for call, arguments in calls:
            try:
                call(**common, **arguments)
            except FireflyError as exc:
                self.message_user(request, exc.message, messages.ERROR)
