"""Schedule routes: the API under /api/v1/pipelines/{name}/schedules/, and the page's form."""

from django.urls import path

from schedules import api, views

api_urls = [
    path("", api.ScheduleList.as_view(), name="schedules"),
    path("<int:pk>/", api.ScheduleDetail.as_view(), name="schedule"),
]

page_urls = [
    path(
        "<int:schedule_id>/<slug:action>/",
        views.schedule_toggle,
        name="schedule-toggle",
    ),
]
