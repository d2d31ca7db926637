"""App config for schedules."""

from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "schedules"
    verbose_name = "Schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pipelines import panels, versions
        from pipelines.services import hooks
        from schedules import selectors, services, views

        versions.on_version_created(services.schedules_sync)
        hooks.unsettled_source("queued_triggers", selectors.run_queued_firings)
        hooks.on_purge(services.firings_purge)
        panels.pipeline_panel(views.pipeline_panel)
