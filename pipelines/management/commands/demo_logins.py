"""`manage.py demo_logins`: the banner line of `make run` naming the demo users.

It says nothing unless debug is on and demo users exist: a production start (`make
serve`, `DEBUG` off) never advertises logins whose passwords are published.
"""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from pipelines.management.commands.load_demo import DEMO_USERS


class Command(BaseCommand):
    help = "Print the demo logins (passwords in README) when DEBUG is on and they exist."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            return
        names = [username for username, *_ in DEMO_USERS]
        present = set(
            get_user_model().objects.filter(username__in=names).values_list("username", flat=True)
        )
        existing = [name for name in names if name in present]
        if existing:
            self.stdout.write(
                f"Demo logins: {', '.join(existing)} (their passwords are in README)."
            )
