"""App config for pipelines."""

from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        from firefly_site import metrics
        from pipelines import events, security, selectors, steptypes
        from pipelines.services import finishing, handoffs, hooks

        steptypes.register()
        # Counted after commit by the process that made the change (firefly_site/metrics.py).
        events.register(metrics.on_event, events=["run.finished", "task.decided"])
        metrics.gauge_source(selectors.step_gauges)
        hooks.on_cancel(handoffs.cancel_waiting_children)
        hooks.unsettled_source("unacknowledged_handoffs", handoffs.open_envelopes)
        hooks.unsettled_source("steps_in_flight", finishing.steps_in_flight)
        user_locked_out.connect(security.login_locked_out, dispatch_uid="firefly-locked-out")
