"""REST routes for outbound webhook subscriptions (admin only)."""

from django.urls import URLPattern, path

from approvals.webhooks_api import WebhookListCreate

urlpatterns: list[URLPattern] = [
    path("", WebhookListCreate.as_view(), name="api-webhooks"),
]
