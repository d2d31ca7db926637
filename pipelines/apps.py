"""App config for pipelines."""

from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        # Importing the registry registers the built-in step types.
        from pipelines import lifecycle, registry, security, services  # noqa: F401

        services.cancel_hooks.append(lifecycle.cancel_waiting_children)
        user_locked_out.connect(security.login_locked_out, dispatch_uid="firefly-locked-out")
