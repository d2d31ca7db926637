"""`ApiToken`: a named, expiring, revocable API credential, of which only a hash is kept."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

# New tokens read `ffy_<prefix>_<secret>`; the prefix finds the row, the secret proves it.
TOKEN_SCHEME = "ffy_"  # noqa: S105 (a marker, not a secret)
# Keys carried over from rest_framework.authtoken (40 hex characters) are found by this.
LEGACY_PREFIX = "drf-"


def token_hash(key: str) -> str:
    # One SHA-256 suffices: the secret is 32 random bytes, so there is nothing to guess
    # that a slow hash (bcrypt, PBKDF2) would protect, and every API request pays for it.
    return hashlib.sha256(key.encode()).hexdigest()


def token_prefix(key: str) -> str:
    """The lookup prefix of a presented key (new format, or a migrated DRF key)."""
    if key.startswith(TOKEN_SCHEME):
        return key[len(TOKEN_SCHEME) :].partition("_")[0][:16]
    return LEGACY_PREFIX + key[:12]


def new_token_key() -> tuple[str, str]:
    """(prefix, full key): 48 random bits to find the row, 256 to prove the token."""
    prefix = secrets.token_hex(6)
    return prefix, f"{TOKEN_SCHEME}{prefix}_{secrets.token_urlsafe(32)}"


class ApiToken(models.Model):
    """One token of one user, acting in one organization."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, related_name="+"
    )
    name = models.CharField(max_length=100)
    # Not secret: shown in lists and admin so a person can tell their tokens apart.
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())
