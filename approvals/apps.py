"""App config for approvals."""

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from approvals import steps

        steps.register()
        import approvals.webhooks  # noqa: F401  (importing it registers the webhook listeners)
