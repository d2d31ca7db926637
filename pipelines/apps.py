"""App config for pipelines."""

from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        # Importing the registry registers the built-in step types.
        from pipelines import registry, security  # noqa: F401
        from pipelines.services import finishing, handoffs, hooks

        hooks.on_cancel(handoffs.cancel_waiting_children)
        hooks.unsettled_source("unacknowledged_handoffs", handoffs.open_envelopes)
        hooks.unsettled_source("steps_in_flight", finishing.steps_in_flight)
        user_locked_out.connect(security.login_locked_out, dispatch_uid="firefly-locked-out")
