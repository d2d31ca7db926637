"""`manage.py redact --run N --reason "..." [--actor USERNAME]`: erase a finished run's data."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines import services
from pipelines.errors import FireflyError


class Command(BaseCommand):
    help = (
        "Erase a finished run's data (step outputs, checkpoint data, task context, inputs, "
        "handoff payloads) and redact its audit entries; the chain still verifies, and an "
        "audit.redacted entry records who and why."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, required=True, help="the run's id")
        parser.add_argument("--reason", required=True, help="why (kept in the audit trail)")
        parser.add_argument(
            "--actor",
            help="the user asking (an admin of the run's organization); default: Firefly",
        )

    def handle(self, *args: Any, run: int, reason: str, actor: str | None, **options: Any) -> None:
        user = None
        if actor:
            user = get_user_model().objects.filter(username=actor).first()
            if user is None:
                raise CommandError(f"No user {actor!r}.")
        try:
            entry = services.run_redact(run_id=run, actor=user, reason=reason)
        except FireflyError as exc:
            raise CommandError(exc.message) from exc
        count = (entry.data or {}).get("count", "its")
        self.stdout.write(
            f"run {run}: data erased, {count} audit entries redacted"
            f" (audit.redacted is seq {entry.seq})"
        )
