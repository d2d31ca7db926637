"""Organizations (tenants) and who belongs to them.

Every pipeline, run, task, audit entry, webhook and API token belongs to exactly one
organization; a user belongs to one or more, each with a role.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class OrganizationQuerySet(models.QuerySet["Organization"]):
    def default(self) -> Organization:
        """The organization of a single-team install, and of rows made without one.

        Created on first use, so a database flushed by a test or a fresh install has it.
        """
        slug = settings.FIREFLY_DEFAULT_ORGANIZATION
        org, _ = self.get_or_create(slug=slug, defaults={"name": slug.replace("-", " ").title()})
        return org


class Organization(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    objects = OrganizationQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user in an organization. Roles are cumulative: an admin is also an author."""

    class Role(models.TextChoices):
        MEMBER = "member", "member"
        AUTHOR = "author", "author (creates pipelines and versions)"
        ADMIN = "admin", "admin (members, grants, webhooks, tokens)"

    RANK = {Role.MEMBER: 1, Role.AUTHOR: 2, Role.ADMIN: 3}

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["organization", "user"]
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"

    @property
    def rank(self) -> int:
        return self.RANK[Membership.Role(self.role)]
