"""Django admin for linked chat accounts (who a Slack user is in Firefly): superusers only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from chat.models import ChatIdentity


@admin.register(ChatIdentity)
class ChatIdentityAdmin(admin.ModelAdmin):
    list_display = ("slack_user_id", "team_id", "user", "created_at")
    search_fields = ("slack_user_id", "user__username", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("created_at",)

    # A link lets a Slack account decide as its user, in every organization they belong
    # to: no organization's admin may make one for anyone, only Firefly's operators.
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)
