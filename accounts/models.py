"""Who signed in through the identity provider, and which memberships the provider manages."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from orgs.models import Membership


class Identity(models.Model):
    """A Firefly user as the provider knows them: its issuer and the user's `sub` there.

    Sign-ins are matched on this pair, never on a username or e-mail the provider sends,
    so a provider cannot take over a local account by naming it.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)
    last_sign_in_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.subject} at {self.issuer})"


class ProvidedMembership(models.Model):
    """Marks a membership the provider's group claim made: the next sign-in may change its
    role or remove it. Memberships an admin made in Firefly carry no mark and stay."""

    membership = models.OneToOneField(
        Membership, on_delete=models.CASCADE, related_name="provided_by_sso"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.membership} (from single sign-on)"
