"""REST routes for API tokens, under /api/v1/tokens/."""

from django.urls import URLPattern, path

from tokens.api import TokenListCreate, TokenRevoke

urlpatterns: list[URLPattern] = [
    path("", TokenListCreate.as_view(), name="api-tokens"),
    path("<int:pk>/revoke/", TokenRevoke.as_view(), name="api-token-revoke"),
]
