"""`manage.py load_demo`: load the demo pipelines and create the demo users."""

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"

# username, password, groups. Demo only: `make run` prints these.
DEMO_USERS = [
    ("admin", "firefly-admin", ["superuser"]),
    ("reviewer1", "firefly-review", ["reviewers"]),
    ("reviewer2", "firefly-review", ["reviewers"]),
    ("manager", "firefly-manager", ["release-managers"]),
    ("engineer", "firefly-engineer", []),
]


class Command(BaseCommand):
    help = "Load the demo pipelines and create the demo users (idempotent)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        call_command("load_pipeline", *sorted(DEMO_DIR.glob("*.yaml")), stdout=self.stdout)
        users = get_user_model()
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
            user.set_password(password)
            user.save()
            for name in groups:
                if name != "superuser":
                    user.groups.add(Group.objects.get_or_create(name=name)[0])
        for username, password, groups in DEMO_USERS:
            self.stdout.write(
                f"demo user {username} / {password}  ({', '.join(groups) or 'starts runs'})"
            )
