"""Outbound webhooks: subscriptions, their deliveries, and signed HTTP attempts."""
