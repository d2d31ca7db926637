"""`create_token <username> --name NAME [--organization SLUG] [--days N | --no-expiry]`:
print a new key, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orgs import selectors as orgs
from tokens import services


class Command(BaseCommand):
    help = "Create an API token for a user and print it (it is shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="What the token is for.")
        parser.add_argument(
            "--organization",
            help="The organization it acts in (its slug); default: the user's first by name.",
        )
        expiry = parser.add_mutually_exclusive_group()
        expiry.add_argument(
            "--days", type=int, help="Days until it expires (default FIREFLY_TOKEN_TTL_DAYS)."
        )
        expiry.add_argument("--no-expiry", action="store_true", help="A token that never expires.")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist as exc:
            raise CommandError(f"No user {options['username']!r}.") from exc
        days = options["days"]
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1 (or use --no-expiry).")
        organization = orgs.resolve(user, options["organization"])
        if organization is None:
            wanted = options["organization"]
            where = f"organization {wanted!r}" if wanted else "any organization"
            raise CommandError(f"{user} does not belong to {where}.")
        token, key = services.token_create(
            user=user,
            organization=organization,
            name=options["name"],
            expires_in=timedelta(days=days) if days else None,
            never_expires=options["no_expiry"],
        )
        expires = (
            f"expires {token.expires_at:%Y-%m-%d %H:%M %Z}" if token.expires_at else "never expires"
        )
        self.stderr.write(
            f"Token {token.name!r} for {user} in {organization.slug} ({expires});"
            " it is not shown again:"
        )
        self.stdout.write(key)
