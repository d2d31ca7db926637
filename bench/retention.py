"""Benchmark of retention: purging 100,000 old runs while the pages are used.

    python bench/retention.py [--runs N] [--no-archive]

Reads DATABASE_URL like the app; when unset it uses its own local PostgreSQL database
`firefly_bench_retention` (the purge deletes rows: never point it at a database whose
data you want to keep). The database gets the seed of bench/pages.py (1,000,000 audit
entries, 10,000 open tasks in 100 organizations), seeded with its functions when
missing. On top, each time, N old finished runs (default 100,000) are bulk inserted with
COPY: a pipeline `bench-retention` of `bench-org-00` with `retention: {outputs_days: 30,
runs_days: 60}`, each run finished 100 to 130 days ago with one step, its checkpoint and
four audit entries (scheme 3 chains, content not yet erased), with bulk INSERTs.

Then the reviewer of bench/pages.py requests every page of that benchmark in rounds
(Django's test client, DEBUG off): rounds before the purge, then rounds while
`manage.py apply_retention` runs in another process (with an archive folder unless
--no-archive), until it ends, then as many rounds again after it. Each page's p95
before, during and after is printed, and the
purge's figures (runs per second, the longest batch); `verify_audit` then checks the
purged runs' chains. Last line: one JSON object with the figures. Exits 1 when the bench
cannot run, 3 when the p95 during the purge is more than 20% (and 10 ms) above before.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/firefly_bench_retention")

from bench.audit_admin import configure_admin_env, prepare  # noqa: E402
from bench.common import BenchError, database_errors, durability, main, print_columns, setup  # noqa: E402
from bench.pages import MEASURED, reserve  # noqa: E402

RUNS = 100_000
CHUNK = 2000  # runs per COPY batch
PIPELINE = "bench-retention"
SPEC = {
    "name": PIPELINE,
    "steps": [{"name": "extract", "type": "noop"}],
    "retention": {"outputs_days": 30, "runs_days": 60},
}
ROUNDS_BEFORE = 15
WARMUP = 2
SEED = 20261201
TOLERANCE = 1.2  # the p95 during may be 20% above before ...
SLACK_MS = 10.0  # ... or this much, whichever is more: timings move on shared cores


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return round(ordered[max(0, int(len(ordered) * share + 0.5) - 1)], 1)


# --- seed -----------------------------------------------------------------------------


def seed_old_runs(count: int) -> float:
    """`count` finished runs, 100 to 130 days old, with their step, checkpoint and chain."""
    from django.db import connection, transaction

    from orgs.models import Organization
    from pipelines import services
    from pipelines.audit import AuditChain
    from pipelines.models import AuditEntry, Checkpoint, Run, StepRun

    started = time.perf_counter()
    rng = random.Random(SEED)
    now = datetime.now(UTC)
    org = Organization.objects.get(slug=MEASURED)
    version = services.pipeline_create(spec=SPEC, organization=org)
    with transaction.atomic(), connection.cursor() as cursor:
        run_ids = reserve(cursor, "pipelines_run", count)
        step_ids = reserve(cursor, "pipelines_steprun", count)
        for chunk in range(0, count, CHUNK):
            runs, steps, checkpoints, entries = [], [], [], []
            for n in range(chunk, min(chunk + CHUNK, count)):
                finished = now - timedelta(days=rng.uniform(100, 130))
                created = finished - timedelta(seconds=rng.uniform(1, 60))
                inputs = {"customer": f"customer-{n}@example.com", "amount": rng.randint(1, 999)}
                outputs = {"invoice": f"INV-{n:06d}", "total": inputs["amount"]}
                run = Run(
                    pk=run_ids[n],
                    organization_id=org.pk,
                    pipeline_version_id=version.pk,
                    status="succeeded",
                    inputs=inputs,
                    output={"extract": outputs},
                    created_at=created,
                    started_at=created,
                    finished_at=finished,
                    checkpoint_seq=1,
                    revision=4,
                )
                chain = AuditChain(run, version.pipeline_id)
                chain.add("run.created", status="pending", inputs=inputs, now=created)
                chain.add("run.started", status="running", now=created)
                chain.add(
                    "step.succeeded",
                    step_name="extract",
                    status="succeeded",
                    outputs=outputs,
                    started_at=created,
                    completed_at=finished,
                    now=finished,
                )
                chain.add("run.finished", status="succeeded", outputs=run.output, now=finished)
                runs.append(run)
                entries.extend(chain.entries)
                steps.append(
                    StepRun(
                        pk=step_ids[n],
                        organization_id=org.pk,
                        run_id=run.pk,
                        step_name="extract",
                        status="succeeded",
                        inputs=inputs,
                        outputs=outputs,
                        queued_at=created,
                        started_at=created,
                        finished_at=finished,
                    )
                )
                checkpoints.append(
                    Checkpoint(
                        organization_id=org.pk,
                        run_id=run.pk,
                        seq=1,
                        step_name="extract",
                        generation=1,
                        step_run_id=step_ids[n],
                        status="succeeded",
                        created_at=finished,
                    )
                )
            Run.objects.bulk_create(runs)
            StepRun.objects.bulk_create(steps)
            Checkpoint.objects.bulk_create(checkpoints)
            AuditEntry.objects.bulk_create(entries, batch_size=5000)
            done = min(chunk + CHUNK, count)
            if done % 20_000 == 0 or done == count:
                print(f"  seeded {done:,} old runs ({time.perf_counter() - started:.0f} s)")
    with connection.cursor() as cursor:
        for table in ("pipelines_run", "pipelines_steprun", "pipelines_checkpoint"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


# --- timing ---------------------------------------------------------------------------


def page_round(
    client: Any, urls: dict[str, dict[str, Any]], samples: dict[str, list[float]]
) -> None:
    from bench.pages import fetch

    for name, page in urls.items():
        started = time.perf_counter()
        fetch(client, page["url"], page.get("htmx", False))
        samples[name].append((time.perf_counter() - started) * 1000)


def reviewer_client() -> Any:
    from django.test import Client

    from bench.pages import reviewer
    from orgs.middleware import SESSION_KEY

    client = Client()
    client.force_login(reviewer())
    session = client.session
    session[SESSION_KEY] = MEASURED
    session.save()
    return client


def purge_process(archive: str, output: Any, idle_share: float | None) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **({"FIREFLY_RETENTION_IDLE_SHARE": str(idle_share)} if idle_share is not None else {}),
        "FIREFLY_RETENTION_BUDGET_S": "86400",
        "FIREFLY_RETENTION_ARCHIVE_DIR": archive,
        "FIREFLY_RETENTION_ARCHIVE_REQUIRED": "true" if archive else "false",
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "apply_retention"],
        cwd=ROOT,
        env=env,
        # To a file: a pipe nobody reads while the pages are timed would fill and stall it.
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def verify_purged(run_ids: list[int]) -> tuple[bool, float]:
    """verify_audit over a sample of the purged runs' chains (and their purge records)."""
    from io import StringIO

    from django.core.management import CommandError, call_command

    started = time.perf_counter()
    try:
        for run_id in run_ids:
            call_command("verify_audit", "--run", str(run_id), stdout=StringIO())
    except CommandError as exc:  # it names the break
        print(f"verify_audit: {exc}")
        return False, time.perf_counter() - started
    return True, time.perf_counter() - started


def run_bench() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="old runs to purge")
    parser.add_argument("--no-archive", action="store_true", help="purge without archiving")
    parser.add_argument(
        "--idle-share",
        type=float,
        default=None,
        help="FIREFLY_RETENTION_IDLE_SHARE for the purge (default: the setting's, 0.8)",
    )
    options = parser.parse_args()
    database_url = configure_admin_env()
    setup(database_url)
    with database_errors():
        from bench.pages import pages, prepare_tasks
        from pipelines.models import AuditEntry, Run

        entries, _ = prepare(database_url)
        prepare_tasks()
        leftover = Run.objects.filter(pipeline_version__pipeline__name=PIPELINE).count()
        if leftover:
            raise BenchError(f"{leftover:,} {PIPELINE} runs left from an earlier run: drop it")
        print(f"seeding {options.runs:,} old finished runs ...")
        seed_s = seed_old_runs(options.runs)
        old_ids = list(
            Run.objects.filter(pipeline_version__pipeline__name=PIPELINE)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        urls = {k: v for k, v in pages().items() if not k.startswith("_")}
        client = reviewer_client()
        before: dict[str, list[float]] = {name: [] for name in urls}
        during: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(WARMUP):
            page_round(client, urls, {name: [] for name in urls})
        for _ in range(ROUNDS_BEFORE):
            page_round(client, urls, before)
        with (
            tempfile.TemporaryDirectory(prefix="firefly-archive-") as archive,
            tempfile.TemporaryFile("w+") as output,
        ):
            started = time.perf_counter()
            process = purge_process(
                "" if options.no_archive else archive, output, options.idle_share
            )
            rounds = 0
            while process.poll() is None:
                page_round(client, urls, during)
                rounds += 1
            purge_s = time.perf_counter() - started
            output.seek(0)
            out = output.read()
            if process.returncode != 0:
                raise BenchError(f"apply_retention failed: {out.strip()[-2000:]}")
            report = json.loads(out.strip().splitlines()[-1])
            segments = len(list(Path(archive).glob("*.jsonl")))
        # The same rounds again once it is over: how much of a change is the machine's own.
        after: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(ROUNDS_BEFORE):
            page_round(client, urls, after)
        left = Run.objects.filter(pk__in=old_ids).count()
        sample = old_ids[:: max(1, len(old_ids) // 50)]
        intact, verify_s = verify_purged(sample)
        kept_entries = AuditEntry.objects.filter(run_id__in=sample).count()

    rows = [("page", "p50 before", "p95 before", "p50 during", "p95 during", "p95 after")]
    figures = {}
    for name in urls:
        b, d = before[name], during[name]
        figures[name] = {
            "p95_before_ms": percentile(b, 0.95),
            "p95_during_ms": percentile(d, 0.95) if d else None,
            "p95_after_ms": percentile(after[name], 0.95),
        }
        rows.append(
            (
                name,
                f"{statistics.median(b):.1f}",
                f"{percentile(b, 0.95):.1f}",
                f"{statistics.median(d):.1f}" if d else "-",
                f"{percentile(d, 0.95):.1f}" if d else "-",
                f"{percentile(after[name], 0.95):.1f}",
            )
        )
    all_before = [x for s in before.values() for x in s]
    all_during = [x for s in during.values() for x in s]
    p95_before = percentile(all_before, 0.95)
    p95_during = percentile(all_during, 0.95) if all_during else p95_before
    p95_after = percentile([x for s in after.values() for x in s], 0.95)
    print()
    print_columns(rows, right={1, 2, 3, 4, 5})
    rate = report["purged"] / purge_s if purge_s else 0.0
    print(
        f"\npurged {report['purged']:,} of {options.runs:,} runs in {purge_s:.1f} s "
        f"({rate:,.0f} runs/s; {report['batches']} batches, longest"
        f" {report['longest_batch_s']:.2f} s; {segments} archive segments); {left} left"
    )
    print(
        f"all pages: p95 {p95_before:.1f} ms before, {p95_during:.1f} ms during"
        f" ({rounds} rounds), {p95_after:.1f} ms after; verify_audit of {len(sample)} purged runs"
        f" ({kept_entries} entries kept): {'intact' if intact else 'BROKEN'}"
    )
    summary = {
        "entries": entries,
        "old_runs": options.runs,
        "seed_s": round(seed_s, 1),
        "archive": not options.no_archive,
        "purged": report["purged"],
        "left": left,
        "purge_s": round(purge_s, 1),
        "runs_per_s": round(rate),
        "batches": report["batches"],
        "longest_batch_s": round(report["longest_batch_s"], 3),
        "segments": segments,
        "rounds_before": ROUNDS_BEFORE,
        "rounds_during": rounds,
        "p95_before_ms": p95_before,
        "p95_during_ms": p95_during,
        "p95_after_ms": p95_after,
        "idle_share": options.idle_share,
        "pages": figures,
        "verify_intact": intact,
        "verify_s": round(verify_s, 1),
    }
    summary.update(durability())
    print(json.dumps(summary))
    slower = p95_during > max(p95_before * TOLERANCE, p95_before + SLACK_MS)
    if left or not intact:
        return 1
    return 3 if slower else 0


if __name__ == "__main__":
    sys.exit(main("bench/retention.py", run_bench))
