"""Benchmark of the global audit sequence at 1,000,000 entries: sequencing and checking.

    python bench/audit_ledger.py

Reads DATABASE_URL like the app; when unset it uses a local PostgreSQL database
`firefly_bench_ledger` (never the SQLite file). It creates the database if needed and
migrates it; unless the audit table already holds 1,000,000 entries it inserts them
with one INSERT … SELECT (20,000 runs of 50 entries; their own hashes are not HMACs:
this bench times the ledger, not the chains, which bench/audit_admin.py seeds for real)
and runs VACUUM ANALYZE. Then it times:

- `sequence`: the sequencer giving every entry without a position its own (the first
  run sequences the whole backlog, in batches of `anchors.SEQUENCE_BATCH`);
- `anchor`: one anchor after 1,000 new entries (what one beat does under load);
- `ledger check`: `anchor_checks.verify()`, the part `verify_audit --anchors` adds to
  `verify_audit`: every position's link recomputed and its entry compared.

Anchors go to a file in a temporary folder. Prints the figures, then as its last line
one JSON object with them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import configure_env, database_errors, durability, main, setup  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/firefly_bench_ledger"
ENTRIES = 1_000_000
ENTRIES_PER_RUN = 50
LATER = 1_000


def seed(count: int) -> None:
    """`count` entries, in new runs of ENTRIES_PER_RUN."""
    from django.db import connection

    from pipelines.models import AuditEntry, Pipeline, Run
    from pipelines.versions import pipeline_create_or_get

    if not Pipeline.objects.filter(name="bench-ledger").exists():
        spec = {"name": "bench-ledger", "steps": [{"name": "a", "type": "noop"}]}
        pipeline_create_or_get(spec=spec, member_role="starter")
    pipeline = Pipeline.objects.get(name="bench-ledger")
    version = pipeline.versions.order_by("-number")[0]
    runs = count // ENTRIES_PER_RUN
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Run._meta.db_table} (organization_id, pipeline_version_id, status,"
            " inputs, error, generation, idempotency_key, audit_seq, audit_head,"
            " checkpoint_seq, revision, finish_attempts, finishing, trace_id, created_at)"
            " SELECT %s, %s, 'succeeded', '{}', '', 1, '', %s, md5(g::text) || md5(g::text),"
            " 0, 0, 0, '', '', now() FROM generate_series(1, %s) g",
            [pipeline.organization_id, version.pk, ENTRIES_PER_RUN, runs],
        )
        cursor.execute(
            f"INSERT INTO {AuditEntry._meta.db_table} (organization_id, run_id, pipeline_id, seq,"
            " step_name, event, actor_name, status, error_message, pause_reason, created_at,"
            " prev_hash, hash, hash_scheme, key_id, content_hash)"
            " SELECT r.organization_id, r.id, %s, s, '', 'step.succeeded', 'system', 'succeeded',"
            " '', '', now(), '', md5(r.id::text || '-' || s) || md5(s || '-' || r.id::text),"
            " 3, 'default', ''"
            f" FROM {Run._meta.db_table} r, generate_series(1, %s) s"
            " WHERE r.id IN (SELECT id FROM "
            f"{Run._meta.db_table} ORDER BY id DESC LIMIT %s)",
            [pipeline.pk, ENTRIES_PER_RUN, runs],
        )


def run_bench() -> int:
    database_url = configure_env(DEFAULT_DATABASE_URL)
    folder = tempfile.mkdtemp(prefix="firefly-bench-anchors-")
    os.environ["FIREFLY_ANCHOR_FILE"] = str(Path(folder) / "anchors.jsonl")
    os.environ.setdefault("FIREFLY_RLS", "false")
    setup(database_url)
    from django.db import connection

    from pipelines import anchor_checks, anchors
    from pipelines.models import AuditEntry, AuditLedger

    with database_errors():
        existing = AuditEntry.objects.count()
        if existing < ENTRIES:
            started = time.perf_counter()
            seed(ENTRIES - existing)
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
            print(f"seeded {ENTRIES - existing:,} entries in {time.perf_counter() - started:.1f}s")
        backlog = AuditEntry.objects.count() - AuditLedger.objects.count()
        started = time.perf_counter()
        anchors.sequence_all()
        sequence_s = time.perf_counter() - started
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {AuditLedger._meta.db_table}")
        anchors.anchor_audit()
        seed(LATER)
        started = time.perf_counter()
        anchor = anchors.anchor_audit()
        anchor_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        problem, positions = anchor_checks.verify()
        check_s = time.perf_counter() - started
    if problem:
        print(f"ledger check found: {problem}", file=sys.stderr)
        return 1
    summary: dict[str, object] = {
        "positions": positions,
        "sequenced": backlog,
        "sequence_s": round(sequence_s, 1),
        "sequence_per_s": round(backlog / sequence_s) if backlog and sequence_s else None,
        "anchor_after_1000_ms": round(anchor_ms, 1),
        "anchor_chains": len(anchor["chains"]) if anchor else 0,
        "ledger_check_s": round(check_s, 1),
        "ledger_check_per_s": round(positions / check_s),
    }
    print(
        f"sequenced {backlog:,} entries in {sequence_s:.1f}s; anchor after {LATER:,} new "
        f"entries {anchor_ms:.0f} ms; ledger check of {positions:,} positions in "
        f"{check_s:.1f}s ({positions / check_s:,.0f}/s)"
    )
    summary.update(durability())
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main("bench/audit_ledger.py", run_bench))
