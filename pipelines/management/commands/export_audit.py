"""`manage.py export_audit (--run ID | --since DATE [--until DATE])`: write audit JSONL,
then the signed anchors that name the exported chains (lines with "type": "anchor")."""

import sys
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from pipelines.anchor_checks import anchors_naming
from pipelines.anchors import chain_name
from pipelines.audit import export_line
from pipelines.management.commands.load_pipeline import organization_named
from pipelines.models import AuditEntry


def moment(value: str, end: bool = False) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time.")
        parsed = datetime.combine(day, time.max if end else time.min)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


class Command(BaseCommand):
    help = (
        "Write audit entries with their hashes as JSON lines, so the chain's head can be "
        "kept outside the database (check it later with verify_audit --against FILE)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, help="one run's chain")
        parser.add_argument("--organization", help="only this organization's entries (its slug)")
        parser.add_argument("--since", help="entries created at or after this date or time")
        parser.add_argument("--until", help="entries created up to this date or time")
        parser.add_argument("--output", type=Path, help="file to write (default: standard output)")

    def handle(self, *args: Any, **options: Any) -> None:
        entries = AuditEntry.objects.order_by("run_id", "pipeline_id", "seq")
        if options["run"] is not None:
            entries = entries.filter(run_id=options["run"])
        elif options["since"]:
            entries = entries.filter(created_at__gte=moment(options["since"]))
            if options["until"]:
                entries = entries.filter(created_at__lte=moment(options["until"], end=True))
        else:
            raise CommandError("Give --run ID, or --since DATE (and optionally --until DATE).")
        if options.get("organization"):
            entries = entries.filter(organization=organization_named(options["organization"]))
        out = options["output"].open("w") if options["output"] else sys.stdout
        count = 0
        exported: set[str] = set()
        anchors = 0
        try:
            for entry in entries.iterator(chunk_size=2000):
                out.write(export_line(entry) + "\n")
                exported.add(chain_name(entry.run_id, entry.pipeline_id))
                count += 1
            # An anchor names the chains of every organization: an export for one
            # organization carries none.
            for line in [] if options.get("organization") else anchors_naming(exported):
                out.write(line + "\n")
                anchors += 1
        finally:
            if options["output"]:
                out.close()
        self.stderr.write(f"exported {count} entries and {anchors} anchors")
