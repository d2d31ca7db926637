"""The organization pages, under /org/."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.organization, name="org"),
    path("switch/", views.switch, name="org-switch"),
    path("members/", views.member_add, name="org-member-add"),
    path("members/<int:membership_id>/role/", views.member_role, name="org-member-role"),
    path("members/<int:membership_id>/remove/", views.member_remove, name="org-member-remove"),
    path(
        "pipelines/<int:pipeline_id>/member-role/",
        views.pipeline_member_role,
        name="org-pipeline-member-role",
    ),
    path("pipelines/<int:pipeline_id>/grants/", views.grant_add, name="org-grant-add"),
    path("grants/<int:grant_id>/remove/", views.grant_remove, name="org-grant-remove"),
    path("tokens/", views.token_create, name="org-token-create"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="org-token-revoke"),
    path("webhooks/", views.webhook_create, name="org-webhook-create"),
    path(
        "webhooks/<int:webhook_id>/deactivate/",
        views.webhook_deactivate,
        name="org-webhook-deactivate",
    ),
]
