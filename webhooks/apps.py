"""App config for webhooks."""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pipelines.services import hooks
        from webhooks import selectors, services

        services.register()
        hooks.unsettled_source("queued_webhook_deliveries", selectors.run_pending_deliveries)
        hooks.on_erase(services.deliveries_erase)
        hooks.on_purge(services.deliveries_purge)
