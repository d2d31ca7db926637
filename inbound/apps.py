"""App config for inbound hooks: endpoints that start a pipeline's runs when another
system posts a signed delivery."""

from django.apps import AppConfig


class InboundConfig(AppConfig):
    name = "inbound"
    verbose_name = "Inbound hooks"
    default_auto_field = "django.db.models.BigAutoField"
