"""Inbound hooks (a pipeline's trigger endpoints) and the record of every delivery."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from inbound import mapping
from webhooks import crypto

SIGNATURE_HEADER = "X-Hub-Signature-256"
TOKEN_BYTES = 24  # 32 URL-safe characters: guessing one is hopeless


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_encrypted_secret() -> str:
    # A row made without the services still gets a secret, and never in plaintext.
    return crypto.encrypt(new_secret())


def validate_rate(rate: str) -> None:
    """`N/second`, `N/minute`, `N/hour` or `N/day` (DRF's throttle format), or blank."""
    if not rate:
        return
    count, _, period = rate.partition("/")
    if not count.isdigit() or int(count) < 1 or period[:1] not in ("s", "m", "h", "d"):
        raise ValidationError(
            f"{rate!r} is not a rate: write N/second, N/minute, N/hour or N/day, N at least 1."
        )


def validate_header_name(name: str) -> None:
    if name and not all(c.isalnum() or c in "-_" for c in name):
        raise ValidationError(f"{name!r} is not a header name (letters, digits, - and _).")


def validate_mapping(value: object) -> None:
    problems = mapping.mapping_problems(value)
    if problems:
        raise ValidationError("; ".join(problems))


def validate_expression(value: str) -> None:
    if value:
        problem = mapping.expression_problem(value)
        if problem:
            raise ValidationError(problem)


def max_body_limit() -> int:
    return int(settings.FIREFLY_INBOUND_MAX_BODY_BYTES)


def validate_max_body(value: int) -> None:
    limit = max_body_limit()
    if value > limit:
        raise ValidationError(f"At most {limit:,} bytes (FIREFLY_INBOUND_MAX_BODY_BYTES).")


class InboundHook(models.Model):
    """`POST /hooks/<token>/` starts a run of `pipeline` when the body is signed with the
    hook's secret; the run's inputs come from the body through `input_mapping`.

    The secret is stored encrypted (`webhooks.crypto`, FIREFLY_SECRETS_KEY) and decrypted
    only to verify a delivery; its plaintext is shown once, when created or rotated.
    """

    class Format(models.TextChoices):
        HMAC_SHA256 = "hmac-sha256", "HMAC-SHA256 of the raw body (X-Hub-Signature-256 style)"
        FIREFLY = "firefly", "Firefly-Signature with Firefly-Timestamp (as Firefly's webhooks)"

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    pipeline = models.ForeignKey(
        "pipelines.Pipeline", on_delete=models.CASCADE, related_name="inbound_hooks"
    )
    name = models.SlugField(max_length=100)
    token = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    secret_encrypted = models.TextField(default=new_encrypted_secret, editable=False)
    # The secret a rotation replaced, still accepted until `previous_secret_until`, so
    # that the sender can switch over without its deliveries being refused.
    previous_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    signature_format = models.CharField(
        max_length=16, choices=Format.choices, default=Format.HMAC_SHA256
    )
    # For hmac-sha256: where the sender puts `sha256=<hex>` (GitHub's name by default).
    signature_header = models.CharField(
        max_length=100, default=SIGNATURE_HEADER, validators=[validate_header_name]
    )
    # For firefly: how far Firefly-Timestamp may be from now, either way.
    replay_window_s = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(1), MaxValueValidator(86400)]
    )
    max_body_bytes = models.PositiveIntegerField(
        default=256 * 1024, validators=[MinValueValidator(2), validate_max_body]
    )
    # {input name: JMESPath expression over the JSON body}; empty: the body is the inputs.
    input_mapping = models.JSONField(default=dict, blank=True, validators=[validate_mapping])
    # What names a delivery, so that the same one twice starts one run: a header, or a
    # JMESPath expression over the body (at most one); neither: the body's SHA-256.
    delivery_id_header = models.CharField(
        max_length=100, blank=True, default="", validators=[validate_header_name]
    )
    delivery_id_path = models.CharField(
        max_length=200, blank=True, default="", validators=[validate_expression]
    )
    # Accepted deliveries per period, DRF's throttle format; blank: no limit.
    rate_limit = models.CharField(
        max_length=32, blank=True, default="60/minute", validators=[validate_rate]
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["pipeline", "name"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "name"], name="inboundhook_unique_name"),
            models.CheckConstraint(
                condition=models.Q(delivery_id_header="") | models.Q(delivery_id_path=""),
                name="inboundhook_one_delivery_id_source",
                violation_error_message=(
                    "Name the delivery id by a header (delivery_id_header) or by a JMESPath "
                    "expression (delivery_id_path), not both."
                ),
            ),
        ]
        indexes = [models.Index(fields=["organization", "pipeline"], name="inboundhook_org")]

    # The plaintext of a secret just created or rotated, set only on the instance the
    # service returns so that it can be shown once; never stored.
    new_secret: str = ""

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> str:
        return f"/hooks/{self.token}/"


class InboundDelivery(models.Model):
    """One request to a hook and what became of it: accepted (it started `run`), a
    duplicate of an accepted one (it names that run), or refused (and why)."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"
        DUPLICATE = "duplicate"
        REFUSED = "refused"

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    hook = models.ForeignKey(InboundHook, on_delete=models.CASCADE, related_name="deliveries")
    delivery_id = models.CharField(max_length=200, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.TextField(blank=True)
    http_status = models.PositiveSmallIntegerField()
    run = models.ForeignKey(
        "pipelines.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    received_at = models.DateTimeField(default=timezone.now)
    address = models.GenericIPAddressField(null=True, blank=True)
    body_bytes = models.PositiveIntegerField(default=0)
    body_sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "inbound deliveries"
        constraints = [
            # The same delivery accepted twice would start two runs; concurrent copies
            # collide here and the loser answers with the winner's run.
            models.UniqueConstraint(
                fields=["hook", "delivery_id"],
                name="inbounddelivery_unique_accepted",
                condition=models.Q(outcome="accepted"),
            )
        ]
        indexes = [
            models.Index(fields=["hook", "-received_at"], name="inbounddelivery_hook"),
            models.Index(fields=["organization", "-received_at"], name="inbounddelivery_org"),
        ]

    def __str__(self) -> str:
        return f"{self.outcome} delivery {self.delivery_id or self.pk} to hook {self.hook_id}"
