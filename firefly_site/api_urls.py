"""REST API routes (v1), the OpenAPI schema and its browsable docs."""

from csp.decorators import csp_update
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from approvals import api as tasks
from approvals import me_api
from pipelines import api, catalogue_api
from schedules import urls as schedules

v1 = [
    path("pipelines/", api.PipelineList.as_view(), name="pipelines"),
    # Before pipelines/<name>/, which it would otherwise be (it answers GET as that).
    path("pipelines/validate/", catalogue_api.PipelineValidate.as_view(), name="pipeline-validate"),
    path("step-types/", catalogue_api.StepTypeList.as_view(), name="step-types"),
    path("spec-schema/", catalogue_api.SpecSchema.as_view(), name="spec-schema"),
    path("pipelines/<slug:name>/", api.PipelineDetail.as_view(), name="pipeline"),
    path("pipelines/<slug:name>/runs/", api.RunStart.as_view(), name="run-start"),
    path("pipelines/<slug:name>/schedules/", include(schedules.api_urls)),
    path("runs/", api.RunList.as_view(), name="runs"),
    path("runs/<int:pk>/", api.RunDetail.as_view(), name="run"),
    path("runs/<int:pk>/cancel/", api.RunCancel.as_view(), name="run-cancel"),
    path("runs/<int:pk>/resume/", api.RunResume.as_view(), name="run-resume"),
    path("runs/<int:pk>/fork/", api.RunFork.as_view(), name="run-fork"),
    path("runs/<int:pk>/checkpoints/", api.RunCheckpoints.as_view(), name="run-checkpoints"),
    path("runs/<int:pk>/audit/", api.RunAudit.as_view(), name="run-audit"),
    path("handoffs/<int:pk>/", api.HandoffDetail.as_view(), name="handoff"),
    path(
        "handoffs/<int:pk>/acknowledge/",
        api.HandoffAcknowledge.as_view(),
        name="handoff-acknowledge",
    ),
    path("tasks/", tasks.TaskList.as_view(), name="tasks"),
    path("tasks/bulk/", tasks.TaskBulk.as_view(), name="tasks-bulk"),
    path("tasks/<int:pk>/", tasks.TaskDetail.as_view(), name="task"),
    path("tasks/<int:pk>/approve/", tasks.TaskApprove.as_view(), name="task-approve"),
    path("tasks/<int:pk>/reject/", tasks.TaskReject.as_view(), name="task-reject"),
    path("tasks/<int:pk>/rollback/", tasks.TaskRollback.as_view(), name="task-rollback"),
    path("tasks/<int:pk>/complete/", tasks.TaskComplete.as_view(), name="task-complete"),
    path("tasks/<int:pk>/claim/", tasks.TaskClaim.as_view(), name="task-claim"),
    path("tasks/<int:pk>/unclaim/", tasks.TaskUnclaim.as_view(), name="task-unclaim"),
    path("tasks/<int:pk>/break-claim/", tasks.TaskBreakClaim.as_view(), name="task-break-claim"),
    path("tasks/<int:pk>/comments/", tasks.TaskComments.as_view(), name="task-comments"),
    path("tasks/<int:pk>/reassign/", tasks.TaskReassign.as_view(), name="task-reassign"),
    path("me/delegation/", tasks.MyDelegation.as_view(), name="my-delegation"),
    path("me/notifications/", me_api.MyNotifications.as_view(), name="my-notifications"),
    path("audit/", api.AuditList.as_view(), name="audit"),
]

urlpatterns = [
    path("v1/webhooks/", include("webhooks.urls")),
    path("v1/tokens/", include("tokens.urls")),
    path("v1/pipelines/<slug:name>/hooks/", include("inbound.urls")),
    path("v1/", include((v1, "api"), namespace="api")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI's start-up script is served from this same URL (`?script`), so the page
    # runs no inline script; its page template keeps one inline <style> block.
    path(
        "docs/",
        csp_update({"style-src": ["'unsafe-inline'"]})(
            SpectacularSwaggerSplitView.as_view(url_name="api-schema")
        ),
        name="api-docs",
    ),
    # Last: any other path under /api/ gets a JSON 404 in the API's error shape.
    re_path(r"^.*$", api.NoSuchEndpoint.as_view()),
]
