"""`manage.py verify_audit [--run ID] [--organization SLUG] [--against FILE] [--anchors]`:
check the audit chains (and the global sequence against the anchors outside the database)."""

import json
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from multiprocessing import get_context
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, connections

from pipelines import anchor_checks as anchoring
from pipelines import keys
from pipelines.audit import Break, verify
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
        parser.add_argument(
            "--jobs",
            type=int,
            default=os.cpu_count() or 1,
            help="processes that check run chains side by side (default: one per CPU)",
        )
        parser.add_argument(
            "--anchors",
            action="store_true",
            help="also check the anchors' signatures, the global sequence's links, and that "
            "every sequenced entry and anchored chain head is still there",
        )

    def handle(
        self,
        *args: Any,
        run: int | None,
        against: Path | None,
        anchors: bool = False,
        **options: Any,
    ) -> None:
        started = time.perf_counter()
        slug = options.get("organization")
        org_id = organization_named(slug).pk if slug else None
        if options["jobs"] < 1:
            raise CommandError("--jobs must be at least 1")
        with ExitStack() as stack:
            ledger: Future[tuple[Break | None, int]] | None = None
            if anchors and options["jobs"] > 1 and not connection.in_atomic_block:
                # The global sequence is checked by a process of its own meanwhile.
                connections.close_all()  # a forked process must open its own
                pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=get_context("fork")))
                ledger = pool.submit(anchoring.verify)
            checked, problem = verify(run, org_id, jobs=options["jobs"])
            if problem is None and against is not None:
                for path in segments(against):
                    problem, compared = compare_with_export(path)
                    checked += compared
                    if problem:
                        break
            if problem is None and anchors:
                problem, positions = ledger.result() if ledger else anchoring.verify()
                self.stdout.write(f"checked {positions} positions of the global sequence")
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
    """Each exported entry must still be in the database, unchanged; each exported anchor
    must carry a valid signature and its chain heads must still be in the database."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from exc
    compared = 0
    for number, line in enumerate(lines, 1):
        try:
            exported = json.loads(line)
            if isinstance(exported, dict) and exported.get("type") == "anchor":
                problem = compare_anchor(exported, f"{path.name}:{number}")
                if problem:
                    return problem, compared
                continue
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


def compare_anchor(anchor: dict[str, Any], where: str) -> Break | None:
    try:
        problem = anchoring.check_anchor(anchor, where)
        if problem:
            return problem
        for head in anchor["chains"]:
            found = anchoring.anchored_hash(head)
            if found is None:
                return Break(
                    "deleted",
                    head["chain"],
                    head["seq"],
                    None,
                    f"anchored in {where} (anchor {anchor['number']}), gone",
                )
            if found != head["hash"]:
                return Break(
                    "edited",
                    head["chain"],
                    head["seq"],
                    None,
                    f"differs from anchor {anchor['number']} in {where}",
                )
    except (KeyError, TypeError, keys.UnknownKey) as exc:
        raise CommandError(f"{where}: not an anchor line ({exc})") from exc
    return None
