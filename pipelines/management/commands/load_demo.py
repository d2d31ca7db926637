"""`manage.py load_demo`: load the demo pipelines and create the demo users."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"

# username, password, groups. Demo only: published in README, printed once when created.
DEMO_USERS = [
    ("admin", "firefly-admin", ["superuser"]),
    ("reviewer1", "firefly-review", ["reviewers"]),
    ("reviewer2", "firefly-review", ["reviewers"]),
    ("manager", "firefly-manager", ["release-managers"]),
    ("engineer", "firefly-engineer", []),
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
        for username, password, groups in self.load():
            self.stdout.write(
                f"demo user {username} / {password}  ({', '.join(groups) or 'starts runs'})"
            )

    @transaction.atomic
    def load(self) -> list[tuple[str, str, list[str]]]:
        """Load the pipelines and create the missing users; returns those just created.

        Only those are printed: a password is shown once, never again at a later start,
        and never for a user who may since have changed it.
        """
        call_command("load_pipeline", *sorted(DEMO_DIR.glob("*.yaml")), stdout=self.stdout)
        users = get_user_model()
        created = []
        for username, password, groups in DEMO_USERS:
            if users.objects.filter(username=username).exists():
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
            created.append((username, password, groups))
        if not created:
            self.stdout.write("demo users exist already (passwords not shown again)")
        return created
