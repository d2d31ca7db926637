"""REST API routes (v1), the OpenAPI schema and its browsable docs."""

from django.urls import include, path

urlpatterns = [
    path("v1/webhooks/", include("pipelines.webhook_urls")),
]
