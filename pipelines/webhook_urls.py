"""REST routes for outbound webhook subscriptions (admin only)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
