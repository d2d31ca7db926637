"""Top-level URL configuration: pages, the REST API under /api/v1/, admin."""

from django.contrib import admin
from django.urls import include, path

from firefly_site import health
from firefly_site.metrics import metrics_view
from inbound.urls import public as inbound_hooks

urlpatterns = [
    # Probes for load balancers and orchestrators (answered by HealthCheckMiddleware).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include("firefly_site.api_urls")),
    # Deliveries from other systems, authenticated by their signature (inbound/views.py).
    path("hooks/", include(inbound_hooks)),
    # Clicks in chat messages, authenticated by Slack's signature (chat/views.py).
    path("chat/", include("chat.urls")),
    path("", include("firefly_site.web_urls")),
]

handler500 = "firefly_site.errors.server_error"
