"""App config for pipelines."""

from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing the registry registers the built-in step types.
        from pipelines import lifecycle, registry, services  # noqa: F401

        services.cancel_hooks.append(lifecycle.cancel_waiting_children)
