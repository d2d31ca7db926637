"""App config for schedules."""

from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "schedules"
    verbose_name = "Schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pipelines import events, panels, versions
        from pipelines.services import hooks
        from schedules import firing, selectors, services, views

        versions.on_version_created(services.schedules_sync)
        hooks.unsettled_source("queued_triggers", selectors.run_queued_firings)
        hooks.on_purge(services.firings_purge)
        panels.pipeline_panel(views.pipeline_panel)
        # Queued firings start when their run finishes, not at the next beat only.
        if not any(hook.listener is firing.release_after for hook in events.hooks):
            events.register(firing.release_after, events=["run.finished"])
