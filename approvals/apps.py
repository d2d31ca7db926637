"""App config for approvals."""

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from approvals import comments, emails, notifications, selectors, services, steps
        from firefly_site import metrics
        from pipelines import events
        from pipelines.services import hooks

        steps.register()
        hooks.unsettled_source("open_tasks", selectors.run_open_tasks)
        hooks.on_erase(services.tasks_erase)
        hooks.on_purge(services.tasks_purge)
        notifications.listen(emails.email_assignees)
        notifications.listen(emails.email_requester)
        comments.listen(emails.email_mentioned)
        events.register(emails.email_run_end, events=["run.finished"])
        metrics.gauge_source(selectors.task_gauges)
