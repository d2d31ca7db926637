"""Routes of the inbound hooks: the management API under /api/v1/pipelines/{name}/hooks/
(included by firefly_site/api_urls.py) and the public endpoint (`public`, included by
firefly_site/urls.py at /hooks/)."""

from django.urls import URLPattern, path

from inbound import api, views

urlpatterns: list[URLPattern] = [
    path("", api.HookListCreate.as_view(), name="api-inbound-hooks"),
    path("<int:pk>/", api.HookDetail.as_view(), name="api-inbound-hook"),
    path("<int:pk>/rotate/", api.HookRotate.as_view(), name="api-inbound-hook-rotate"),
]

public: list[URLPattern] = [
    path("<str:token>/", views.receive, name="inbound-receive"),
]
