"""`manage.py rotate_audit_key [--id ID]`: make a new audit key and print the setting
that signs with it while the current keys keep verifying what they signed."""

import secrets
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from pipelines import keys


class Command(BaseCommand):
    help = (
        "Print a FIREFLY_AUDIT_KEYS value with a new key in front (it signs from the next "
        "start) and the configured keys after it (they keep verifying). Nothing is stored: "
        "put the value where the environment of every Firefly process comes from, restart "
        "them, and keep the old keys for as long as their entries must verify."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--id", dest="key_id", help="the new key's id (default: its date)")

    def handle(self, *args: Any, key_id: str | None, **options: Any) -> None:
        listed = [item.strip() for item in settings.FIREFLY_AUDIT_KEYS if item.strip()]
        taken = set(keys.known())
        if key_id is None:
            stem = timezone.now().strftime("k%Y%m%d")
            key_id = next(
                candidate
                for candidate in [stem, *(f"{stem}.{n}" for n in range(2, 100))]
                if candidate not in taken
            )
        if not keys.KEY_ID.match(key_id) or key_id in taken:
            raise CommandError(
                f"--id {key_id!r}: a key id is 1-32 letters, digits, '.', '_' or '-', not "
                f"one already configured ({', '.join(sorted(taken))})"
            )
        value = ",".join([f"{key_id}:{secrets.token_urlsafe(48)}", *listed])
        self.stderr.write(
            f"New audit key {key_id!r}. Set this in every Firefly process's environment and "
            f"restart them; entries signed before keep verifying with their own key "
            f"({', '.join(keys.known())}). FIREFLY_AUDIT_KEY stays as key 'default'."
        )
        self.stdout.write(f"FIREFLY_AUDIT_KEYS={value}")
