"""Reviewer and operator pages."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from approvals import bulk_views, comment_views, email_views, me_views
from approvals import views as approvals
from insights import views as insights
from pipelines import editor
from pipelines import views as pipelines
from schedules import urls as schedules

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Single sign-on (accounts/oidc.py): authenticate/, callback/, logout/; 404 while off.
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("", approvals.inbox, name="home"),
    path("inbox/count/", approvals.inbox_count, name="inbox-count"),
    path("decided/", approvals.archive, name="archive"),
    path("me/", me_views.me, name="me"),
    path("me/delegation/", me_views.delegation_set, name="me-delegation"),
    path("me/delegation/clear/", me_views.delegation_clear, name="me-delegation-clear"),
    path("me/notifications/", me_views.preferences_save, name="me-notifications"),
    path("tasks/bulk/", bulk_views.tasks_bulk, name="tasks-bulk"),
    path("tasks/<int:task_id>/", approvals.task_detail, name="task"),
    path("tasks/<int:task_id>/comments/", comment_views.task_comments, name="task-comments"),
    path("tasks/<int:task_id>/<slug:action>/", approvals.task_action, name="task-action"),
    # Signed links from notification emails: a page that shows, a POST that decides.
    path("email/<str:token>/", email_views.email_action, name="email-action"),
    path("runs/", pipelines.runs_list, name="runs"),
    path("runs/<int:run_id>/", pipelines.run_detail, name="run"),
    path("runs/<int:run_id>/cancel/", pipelines.run_cancel, name="run-cancel"),
    path("runs/<int:run_id>/resume/", pipelines.run_resume, name="run-resume"),
    path("runs/<int:run_id>/fork/", pipelines.run_fork, name="run-fork"),
    path(
        "handoffs/<int:envelope_id>/acknowledge/",
        pipelines.handoff_acknowledge,
        name="handoff-acknowledge",
    ),
    path("pipelines/", pipelines.pipelines_list, name="pipelines"),
    path("pipelines/<slug:name>/", pipelines.pipeline_detail, name="pipeline"),
    path("pipelines/<slug:name>/start/", pipelines.pipeline_start, name="pipeline-start"),
    path("pipelines/<slug:name>/edit/", pipelines.pipeline_edit, name="pipeline-edit"),
    path("pipelines/<slug:name>/edit/check/", editor.spec_check, name="pipeline-edit-check"),
    path("pipelines/<slug:name>/schedules/", include(schedules.page_urls)),
    path("step-types/", pipelines.step_types, name="step-types"),
    path("insights/", insights.insights, name="insights"),
    path("org/", include("accounts.urls")),
]
