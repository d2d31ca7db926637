"""REST routes for outbound webhook subscriptions (staff only), under /api/v1/webhooks/."""

from django.urls import URLPattern, path

from webhooks.api import WebhookListCreate

urlpatterns: list[URLPattern] = [
    path("", WebhookListCreate.as_view(), name="api-webhooks"),
]
