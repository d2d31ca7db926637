"""App config for pipelines."""

from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        from pipelines import lifecycle, security, services, steptypes

        steptypes.register()
        services.cancel_hooks.append(lifecycle.cancel_waiting_children)
        user_locked_out.connect(security.login_locked_out, dispatch_uid="firefly-locked-out")
