"""Webhook subscriptions and their delivery log (tables kept from the approvals app)."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from pipelines import outbound
from webhooks import crypto

# The code of a URL the outbound guard refused (callers audit those refusals).
REFUSED = "outbound_refused"

WEBHOOK_EVENTS = (
    "step.failed",  # a handler's error, a timeout, or a lost worker (`lost`: true)
    "task.opened",
    "task.decided",
    "task.expired",
    "task.escalated",
    "run.finished",
    "run.failed",
)


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def new_encrypted_secret() -> str:
    # A row made without the services still gets a secret, and never in plaintext.
    return crypto.encrypt(new_webhook_secret())


def validate_webhook_url(url: str) -> None:
    """Refuse a URL the outbound guard would not send to (no request forgery by webhook)."""
    try:
        outbound.check(url, allowed=outbound.WEBHOOKS)
    except (outbound.Refused, outbound.Unresolved) as exc:
        # A name with no address now is refused too: nothing shows where it would lead.
        raise ValidationError(str(exc), code=REFUSED) from exc


def validate_webhook_events(events: object) -> None:
    if not isinstance(events, list) or not events:
        raise ValidationError("events must be a non-empty list of event names.", code="invalid")
    unknown = sorted({str(e) for e in events} - set(WEBHOOK_EVENTS))
    if unknown:
        raise ValidationError(
            f"unknown events: {', '.join(unknown)} (known: {', '.join(WEBHOOK_EVENTS)}).",
            code="invalid",
        )


class Webhook(models.Model):
    """An outbound subscription: matching events are POSTed, signed with its secret.

    The secrets are stored encrypted (`webhooks.crypto`); the services decrypt them only
    to sign a delivery.
    """

    # A webhook hears only of its own organization's events.
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+"
    )
    url = models.URLField(max_length=500, validators=[validate_webhook_url])
    events = models.JSONField(default=list, validators=[validate_webhook_events])
    secret_encrypted = models.TextField(default=new_encrypted_secret, editable=False)
    # The secret a rotation replaced, still signed with until `previous_secret_until`, so
    # that receivers can switch over without refusing deliveries.
    previous_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        # The table the approvals app created: moving the model left the rows in place.
        db_table = "approvals_webhook"
        ordering = ["-created_at", "-id"]

    # The plaintext of a secret just created or rotated, set only on the instance the
    # service returns so that it can be shown once; never stored.
    new_secret: str = ""

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event for one webhook, and how sending it went (the delivery log)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32)
    # Stable over retries, so a receiver can drop a repeat it already handled.
    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When the next attempt is due (or the current one should have ended): a pending
    # delivery long past it lost its message, and the sweep sends it again.
    next_attempt_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "approvals_webhookdelivery"
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="delivery_status_created"),
            models.Index(fields=["status", "next_attempt_at"], name="delivery_status_next"),
            models.Index(fields=["webhook", "-created_at"], name="delivery_webhook_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to webhook {self.webhook_id} ({self.status})"
