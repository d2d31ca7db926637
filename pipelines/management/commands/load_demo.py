"""`manage.py load_demo`: two demo organizations with the same pipelines, and their users."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from orgs.models import Membership, Organization

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"

# slug, name. Both get every demo pipeline under the same names: what one organization
# runs, the other never sees.
DEMO_ORGANIZATIONS = [("acme", "Acme"), ("globex", "Globex")]

# username, password, groups, {organization slug: role}. Demo only: published in README,
# printed once when created. A deploy needs two reviewers, so each organization has two;
# reviewer2 and engineer belong to both, to show the header's switcher.
DEMO_USERS = [
    ("admin", "firefly-admin", ["superuser"], {"acme": "admin", "globex": "admin"}),
    ("manager", "firefly-manager", ["release-managers"], {"acme": "admin"}),
    ("reviewer1", "firefly-review", ["reviewers"], {"acme": "member"}),
    ("reviewer2", "firefly-review", ["reviewers"], {"acme": "member", "globex": "member"}),
    ("engineer", "firefly-engineer", [], {"acme": "author", "globex": "member"}),
    ("director", "firefly-director", ["release-managers"], {"globex": "admin"}),
    ("reviewer3", "firefly-review", ["reviewers"], {"globex": "member"}),
]


class Command(BaseCommand):
    help = (
        "Load the demo pipelines and create the demo users (idempotent). Only on the "
        "embedded SQLite database in debug, unless FIREFLY_DEMO=true."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.FIREFLY_DEMO:
            if connection.vendor != "sqlite":
                self.stdout.write(
                    "Demo data not loaded: DATABASE_URL names a real database. "
                    "Set FIREFLY_DEMO=true to load the demo pipelines and users there."
                )
                return
            if not settings.DEBUG:
                raise CommandError(
                    "Refusing to create demo users (their passwords are published) with "
                    "DEBUG off. Set FIREFLY_DEMO=true to load them anyway."
                )
        for username, password, groups, roles in self.load():
            where = ", ".join(f"{slug} {role}" for slug, role in roles.items())
            self.stdout.write(
                f"demo user {username} / {password}  in {where}"
                f" ({', '.join(groups) or 'starts runs'})"
            )

    @transaction.atomic
    def load(self) -> list[tuple[str, str, list[str], dict[str, str]]]:
        """Create the organizations, load the pipelines into each, create the missing users
        and their memberships; returns the users just created.

        Only those are printed: a password is shown once, never again at a later start,
        and never for a user who may since have changed it.
        """
        organizations = {}
        for slug, name in DEMO_ORGANIZATIONS:
            organizations[slug], _ = Organization.objects.get_or_create(
                slug=slug, defaults={"name": name}
            )
            call_command(
                "load_pipeline",
                *sorted(DEMO_DIR.glob("*.yaml")),
                organization=slug,
                member_role="starter",
                stdout=self.stdout,
            )
        users = get_user_model()
        created = []
        for username, password, groups, roles in DEMO_USERS:
            existing = users.objects.filter(username=username).first()
            if existing is not None:
                # An older demo database: its users join the organizations too (roles
                # an admin changed since are kept).
                for slug, role in roles.items():
                    Membership.objects.get_or_create(
                        user=existing, organization=organizations[slug], defaults={"role": role}
                    )
                continue
            superuser = "superuser" in groups
            user = users(
                username=username,
                email=f"{username}@firefly.example",
                is_staff=superuser,
                is_superuser=superuser,
            )
            # Set directly, past the password validators: the demo passwords are
            # published anyway, which is why they exist only in demo databases.
            user.set_password(password)
            user.save()
            for name in groups:
                if name != "superuser":
                    user.groups.add(Group.objects.get_or_create(name=name)[0])
            for slug, role in roles.items():
                Membership.objects.create(user=user, organization=organizations[slug], role=role)
            created.append((username, password, groups, roles))
        if not created:
            self.stdout.write("demo users exist already (passwords not shown again)")
        return created
