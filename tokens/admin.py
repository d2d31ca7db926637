"""Django admin for API tokens: list and revoke; a secret is never shown (none is kept)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from orgs.admin import OrganizationScopedAdmin
from tokens import services
from tokens.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(OrganizationScopedAdmin):
    list_display = (
        "id",
        "name",
        "prefix",
        "organization",
        "user",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
    )
    list_filter = ("organization", "revoked_at", "expires_at")
    list_select_related = ("organization", "user", "revoked_by")
    search_fields = ("name", "prefix", "user__username")
    # The hash is left out too: it is no use to a person, and only services write rows.
    fields = list_display
    readonly_fields = list_display
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Keys are made by `create_token` or the API, which show them once.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Revoke instead: the row keeps who had the token and when it was used.
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_staff)

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        address = request.META.get("REMOTE_ADDR")
        ids = list(queryset.values_list("pk", flat=True))
        for token_id in ids:
            services.token_revoke(token_id=token_id, actor=request.user, address=address)
        self.message_user(request, f"Revoked {len(ids)} token(s).", messages.SUCCESS)
