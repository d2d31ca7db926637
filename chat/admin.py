"""Django admin for linked chat accounts (who a Slack user is in Firefly)."""

from __future__ import annotations

from django.contrib import admin

from chat.models import ChatIdentity


@admin.register(ChatIdentity)
class ChatIdentityAdmin(admin.ModelAdmin):
    list_display = ("slack_user_id", "team_id", "user", "created_at")
    search_fields = ("slack_user_id", "user__username", "user__email")
    raw_id_fields = ("user",)
