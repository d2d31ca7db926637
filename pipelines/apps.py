"""App config for pipelines."""

from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pipelines import registry  # noqa: F401  (registers the built-in step types)
