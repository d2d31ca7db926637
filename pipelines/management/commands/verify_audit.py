"""`manage.py verify_audit [--run ID] [--organization SLUG] [--against FILE]`: check the
audit chains."""

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines.audit import Break, chains, verify_chain
from pipelines.canonical import CONTENT_FIELDS, content_digest
from pipelines.management.commands.load_pipeline import organization_named
from pipelines.models import AuditEntry


class Command(BaseCommand):
    help = (
        "Recompute the audit chains' HMAC links; exit 1 naming the first broken entry and "
        "whether it was edited, deleted, inserted or reordered."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, help="check only this run's chain")
        parser.add_argument(
            "--organization", help="check only this organization's chains (its slug)"
        )
        parser.add_argument(
            "--against",
            type=Path,
            help="also check the database against an export_audit file, a retention archive "
            "segment, or a folder of segments (every *.jsonl in it)",
        )

    def handle(self, *args: Any, run: int | None, against: Path | None, **options: Any) -> None:
        started = time.perf_counter()
        checked = 0
        problem: Break | None = None
        slug = options.get("organization")
        org_id = organization_named(slug).pk if slug else None
        for chain, entries, head in chains(run, org_id):
            checked += len(entries)
            problem = verify_chain(chain, entries, head)
            if problem:
                break
        if problem is None and against is not None:
            for path in segments(against):
                problem, compared = compare_with_export(path)
                checked += compared
                if problem:
                    break
        elapsed = time.perf_counter() - started
        rate = checked / elapsed if elapsed else float(checked)
        self.stdout.write(f"checked {checked} entries in {elapsed:.2f}s ({rate:,.0f} entries/s)")
        if problem:
            raise CommandError(f"audit trail broken at {problem}")
        self.stdout.write("audit trail intact")


def content_of(exported: dict[str, Any]) -> str:
    """The digest of an exported line's content fields (a redacted entry's database row
    still carries the digest, which its archived copy is matched by)."""
    fields: Any = SimpleNamespace(**{name: exported.get(name) for name in CONTENT_FIELDS})
    return content_digest(fields)


def segments(path: Path) -> list[Path]:
    """The file, or the folder's *.jsonl files in name order (segments sort by time)."""
    if path.is_dir():
        found = sorted(path.glob("*.jsonl"))
        if not found:
            raise CommandError(f"{path}: no .jsonl files in the folder")
        return found
    return [path]


def compare_with_export(path: Path) -> tuple[Break | None, int]:
    """Each exported entry must still be in the database, unchanged."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from exc
    compared = 0
    for number, line in enumerate(lines, 1):
        try:
            exported = json.loads(line)
            key = (exported["run_id"], exported["pipeline_id"], exported["seq"])
        except (ValueError, KeyError) as exc:
            raise CommandError(f"{path}:{number}: not an export_audit line ({exc})") from exc
        run_id, pipeline_id, seq = key
        chain = f"run {run_id}" if run_id else f"pipeline {pipeline_id}"
        found = (
            AuditEntry.objects.filter(seq=seq, run_id=run_id)
            if run_id
            else AuditEntry.objects.filter(seq=seq, run__isnull=True, pipeline_id=pipeline_id)
        ).first()
        compared += 1
        if found is None:
            return Break(
                "deleted", chain, seq, exported.get("id"), f"exported in {path.name}, gone"
            ), compared
        if found.hash != exported["hash"]:
            return Break("edited", chain, seq, found.pk, f"differs from {path.name}"), compared
        digest = exported.get("content_sha256")
        if digest is not None and digest != found.content_hash:
            message = f"its content digest differs from {path.name}"
            return Break("edited", chain, seq, found.pk, message), compared
        if digest is not None and "redacted" not in exported and digest != content_of(exported):
            message = f"its content in {path.name} no longer matches its digest"
            return Break("edited", chain, seq, found.pk, message), compared
    return None, compared
