"""Benchmark of the audit trail's Django admin pages on a table of 1,000,000 entries.

    python bench/audit_admin.py

Reads DATABASE_URL like the app; when unset it uses a local PostgreSQL database
`firefly_bench_orgs` (never the SQLite file). It creates the database if needed,
migrates it and, unless the audit table already holds 1,000,000 entries, seeds them with
COPY: 20,000 runs of 50 entries, spread over 90 days, with valid HMAC chains, in 100
organizations (`bench-org-00` to `-99`): the ten big ones hold 9% of the runs each, with
20 pipelines; the 90 small ones share the other 10%, with 2 pipelines each. Then VACUUM
ANALYZE (what autovacuum does to an insert-only table), a superuser,
and Django's test client with DEBUG off times each admin page N times after a warm-up
and counts its queries. Last, `verify_audit`'s check of every chain is timed (entries per
second, one process per CPU, as the command runs by default).

Prints a table, then as its last line one JSON object with the figures. Exits 3 when a
view's p95 or verify_audit's rate misses its target.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BenchError,
    configure_env,
    database_errors,
    durability,
    main,
    print_columns,
    setup,
    time_ms,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/firefly_bench_orgs"

ENTRIES = 1_000_000
ENTRIES_PER_RUN = 50
RUNS = ENTRIES // ENTRIES_PER_RUN
PIPELINES = 20  # in each big organization; a small one has SMALL_PIPELINES
SMALL_PIPELINES = 2
ORGANIZATIONS = 100
BIG_ORGANIZATIONS = 10  # 9% of the rows each; the other 90 share the last 10%
STEPS = (ENTRIES_PER_RUN - 2) // 2  # run.created, (started, outcome) x 24, run.finished
USERS = 12
DAYS = 90
SEED = 20240501
RUNS_PER_COPY = 1000  # rows are streamed to COPY in chunks of this many runs

REPEATS = 30
WARMUP = 3
TARGET_P95_MS = 300.0
VERIFY_TARGET_PER_S = 50_000

ADMIN = "/admin/pipelines/auditentry/"


def configure_admin_env() -> str:
    """The common environment, plus the host names Django's test client uses."""
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
    return configure_env(DEFAULT_DATABASE_URL)


# --- seed -----------------------------------------------------------------------------

RUN_COLUMNS = (
    "id",
    "organization_id",
    "pipeline_version_id",
    "status",
    "inputs",
    "error",
    "generation",
    "created_at",
    "started_at",
    "finished_at",
    "audit_seq",
    "audit_head",
    "checkpoint_seq",
    "revision",
    "created_by_id",
    "idempotency_key",
    "finish_attempts",
    "finishing",
    "trace_id",
)


def audit_columns() -> tuple[str, ...]:
    """The audit entry columns COPY fills: the fields the hash covers, `seq`, `hash` and
    the organization (unless the hash covers it already)."""
    from pipelines.audit import HASHED_FIELDS

    extra = () if "organization_id" in HASHED_FIELDS else ("organization_id",)
    return (*HASHED_FIELDS, "seq", "hash", "hash_scheme", "key_id", "content_hash", *extra)


def organization_slug(index: int) -> str:
    return f"bench-org-{index:02d}"


def organization_index(n: int) -> int:
    """The organization of the n-th seeded row: of every 100, 9 go to each of the 10 big
    organizations and 10 to the next small ones in turn."""
    block, position = divmod(n, 100)
    big_share = 100 - 10
    if position < big_share:
        return position // (big_share // BIG_ORGANIZATIONS)
    small = ORGANIZATIONS - BIG_ORGANIZATIONS
    return BIG_ORGANIZATIONS + (block * 10 + position - big_share) % small


def organizations() -> list[int]:
    """The ids of the 100 bench organizations, created when missing."""
    from orgs.models import Organization

    ids = []
    for index in range(ORGANIZATIONS):
        org, _ = Organization.objects.get_or_create(
            slug=organization_slug(index), defaults={"name": f"Bench org {index:02d}"}
        )
        ids.append(org.pk)
    return ids


def join(users: list[Any], organization_ids: list[int], role: str = "member") -> None:
    """Make each user a member of each organization (kept as is where already one)."""
    from orgs.models import Membership

    Membership.objects.bulk_create(
        [
            Membership(user=user, organization_id=org_id, role=role)
            for user in users
            for org_id in organization_ids
        ],
        ignore_conflicts=True,
    )


def run_entries(
    rng: random.Random,
    run_id: int,
    pipeline: tuple[int, str, int],
    users: list[tuple[int, str]],
    start: datetime,
) -> Iterator[dict[str, Any]]:
    """The 50 entries of one run, as field values: mostly successes, some failures and
    approvals by people, like a human-in-the-loop pipeline's trail."""
    pipeline_id, pipeline_name, organization_id = pipeline
    starter = rng.choice(users) if rng.random() < 0.3 else None
    base = {
        "run_id": run_id,
        "pipeline_id": pipeline_id,
        "organization_id": organization_id,
        "error_message": "",
        "pause_reason": "",
    }
    now = start

    def entry(event: str, **values: Any) -> dict[str, Any]:
        actor = values.pop("actor", None)
        fields = {
            "step_name": "",
            "status": "",
            "inputs": None,
            "outputs": None,
            "latency_ms": None,
            "started_at": None,
            "completed_at": None,
            "data": None,
            **base,
            **values,
        }
        return {
            **fields,
            "event": event,
            "actor_id": actor[0] if actor else None,
            "actor_name": actor[1] if actor else "system",
            "created_at": now,
        }

    yield entry(
        "run.created",
        status="pending",
        actor=starter,
        inputs={"document": f"doc-{run_id}.pdf", "priority": rng.randint(1, 5)},
        data={"pipeline": pipeline_name, "version": 1},
    )
    failed_at = rng.randrange(STEPS) if rng.random() < 0.05 else None
    review_at = rng.randrange(STEPS) if rng.random() < 0.3 else None
    outcome = "succeeded"
    for index in range(STEPS):
        step = f"step-{index:02d}"
        now += timedelta(milliseconds=rng.randint(5, 300))
        started = now
        if outcome == "failed":
            yield entry("step.skipped", step_name=step, status="skipped")
            now += timedelta(milliseconds=1)
            yield entry("step.cancelled", step_name=step, status="cancelled")
            continue
        yield entry("step.started", step_name=step, status="running", inputs={"index": index})
        if index == review_at:
            now += timedelta(minutes=rng.randint(1, 600))
            reviewer = rng.choice(users)
            rejected = rng.random() < 0.1
            yield entry(
                "task.rejected" if rejected else "task.approved",
                step_name=step,
                status="rejected" if rejected else "approved",
                actor=reviewer,
                data={"comment": "looks wrong" if rejected else "ok"},
            )
            continue
        now += timedelta(milliseconds=rng.randint(1, 5000))
        latency = {
            "latency_ms": int((now - started).total_seconds() * 1000),
            "started_at": started,
            "completed_at": now,
        }
        if index == failed_at:
            outcome = "failed"
            yield entry(
                "step.failed",
                step_name=step,
                status="failed",
                error_message="TimeoutError: upstream did not answer",
                **latency,
            )
        else:
            yield entry(
                "step.succeeded",
                step_name=step,
                status="succeeded",
                outputs={"index": index, "ok": True},
                **latency,
            )
    now += timedelta(milliseconds=rng.randint(1, 50))
    yield entry("run.finished", status=outcome)


def seed(database_url: str) -> float:
    """Organizations, pipelines, versions, users, 20,000 runs and 1,000,000 entries, in
    one transaction."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from pipelines import keys
    from pipelines.audit import entry_hash
    from pipelines.canonical import CURRENT_SCHEME, content_digest
    from pipelines.models import Pipeline, PipelineVersion

    started = time.perf_counter()
    rng = random.Random(SEED)
    end = datetime.now(UTC).replace(microsecond=0)
    first = end - timedelta(days=DAYS)
    spec_steps = [{"name": f"step-{i:02d}", "type": "noop"} for i in range(STEPS)]
    key_id = keys.current_id()
    User = get_user_model()
    with transaction.atomic(), connection.cursor() as cursor:
        # The seed is consistent by construction (ids are reserved below); skipping the
        # foreign-key and append-only triggers for this transaction makes COPY ~3x faster.
        cursor.execute("SET LOCAL session_replication_role = replica")
        users = [User.objects.get_or_create(username=f"reviewer{i:02d}")[0] for i in range(USERS)]
        user_refs = [(user.pk, user.get_username()) for user in users]
        org_ids = organizations()
        join(users, org_ids[:BIG_ORGANIZATIONS])
        # Per organization: its pipelines as (pipeline id, name, organization id), versions.
        pipelines: list[list[tuple[int, str, int]]] = []
        versions: list[list[int]] = []
        for index, org_id in enumerate(org_ids):
            pipelines.append([])
            versions.append([])
            count = PIPELINES if index < BIG_ORGANIZATIONS else SMALL_PIPELINES
            for i in range(count):
                # Visible to every member, as the upgrade leaves existing pipelines.
                made = Pipeline.objects.create(
                    organization_id=org_id,
                    name=f"bench-audit-{i:02d}-{int(time.time())}",
                    description="bench/audit_admin.py",
                    member_role="viewer",
                    created_at=first,
                )
                spec = {"name": made.name, "steps": spec_steps}
                versions[index].append(
                    PipelineVersion.objects.create(
                        organization_id=org_id,
                        pipeline=made,
                        number=1,
                        spec=spec,
                        created_at=first,
                    ).pk
                )
                pipelines[index].append((made.pk, made.name, org_id))
        runs_in = [0] * ORGANIZATIONS  # runs seeded so far per organization
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('pipelines_run', 'id'))"
            " FROM generate_series(1, %s)",
            [RUNS],
        )
        run_ids = [row[0] for row in cursor.fetchall()]
        columns = audit_columns()
        copy_audit = f"COPY pipelines_auditentry ({', '.join(columns)}) FROM STDIN"
        copy_run = f"COPY pipelines_run ({', '.join(RUN_COLUMNS)}) FROM STDIN"
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        for chunk in range(0, RUNS, RUNS_PER_COPY):
            audit_rows: list[tuple[Any, ...]] = []
            run_rows: list[tuple[Any, ...]] = []
            for n in range(chunk, min(chunk + RUNS_PER_COPY, RUNS)):
                run_id = run_ids[n]
                org_index = organization_index(n)
                pipeline_index = runs_in[org_index] % len(pipelines[org_index])
                runs_in[org_index] += 1
                pipeline = pipelines[org_index][pipeline_index]
                created = first + timedelta(seconds=rng.uniform(0, DAYS * 86400 - 86400))
                head = ""
                status = "succeeded"
                entry: dict[str, Any] = {}
                for seq, entry in enumerate(
                    run_entries(rng, run_id, pipeline, user_refs, created), 1
                ):
                    entry["seq"] = seq
                    entry["prev_hash"] = head
                    entry["hash_scheme"] = CURRENT_SCHEME
                    entry["key_id"] = key_id
                    # entry_hash reads attributes only: a namespace is ~10x cheaper than
                    # a model instance, and the hash is the one the app computes.
                    entry["content_hash"] = content_digest(SimpleNamespace(**entry))  # type: ignore[arg-type]
                    head = entry["hash"] = entry_hash(SimpleNamespace(**entry))  # type: ignore[arg-type]
                    for column in ("inputs", "outputs", "data"):
                        if entry[column] is not None:
                            entry[column] = json.dumps(entry[column])
                    audit_rows.append(tuple(entry[c] for c in columns))
                    if entry["event"] == "run.finished":
                        status = entry["status"]
                run_rows.append(
                    (
                        run_id,
                        pipeline[2],
                        versions[org_index][pipeline_index],
                        status,
                        json.dumps({"document": f"doc-{run_id}.pdf"}),
                        "",
                        1,
                        created,
                        created,
                        entry["created_at"],
                        ENTRIES_PER_RUN,
                        head,
                        0,
                        1,
                        None,
                        "",
                        0,
                        "",
                        "",
                    )
                )
            with raw.copy(copy_run) as copy:
                for row in run_rows:
                    copy.write_row(row)
            with raw.copy(copy_audit) as copy:
                for row in audit_rows:
                    copy.write_row(row)
            done = min(chunk + RUNS_PER_COPY, RUNS) * ENTRIES_PER_RUN
            if done % 200_000 == 0:
                print(f"  seeded {done:,} entries ({time.perf_counter() - started:.0f} s)")
    return time.perf_counter() - started


def prepare(database_url: str) -> tuple[int, float | None]:
    """Seed unless already seeded; VACUUM ANALYZE. Returns (entries, seed seconds)."""
    from django.db import connection

    from pipelines.canonical import CURRENT_SCHEME
    from pipelines.models import AuditEntry

    entries = AuditEntry.objects.filter(hash_scheme=CURRENT_SCHEME).count()
    seconds = None
    if entries < ENTRIES and AuditEntry.objects.exists():
        name = connection.settings_dict["NAME"]
        raise BenchError(
            f"{name} holds entries of an older hash scheme: drop it (dropdb {name}) to reseed"
        )
    if entries >= ENTRIES:
        print(f"reusing the seed: {entries:,} audit entries")
    else:
        print(f"seeding {ENTRIES:,} audit entries with COPY ...")
        seconds = seed(database_url)
        entries = AuditEntry.objects.count()
        print(f"seeded in {seconds:.1f} s; {entries:,} audit entries")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in ("pipelines_auditentry", "pipelines_run", "pipelines_pipeline"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    print(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")
    return entries, seconds


# --- timing ---------------------------------------------------------------------------


def views() -> dict[str, str]:
    """The pages timed: the five the admin is judged by, plus a date drill-down and two more
    filters."""
    from pipelines.models import AuditEntry

    middle = AuditEntry.objects.filter(run__isnull=False).order_by("-created_at")[
        ENTRIES // 2 : ENTRIES // 2 + 1
    ]
    entry = middle.get()
    month = entry.created_at
    return {
        "changelist": ADMIN,
        "filter_event": f"{ADMIN}?event__exact=step.succeeded",
        "search_run_id": f"{ADMIN}?q={entry.run_id}",
        "page_500": f"{ADMIN}?p=500",
        "change_view": f"{ADMIN}{entry.pk}/change/",
        "filter_status_actor": f"{ADMIN}?status__exact=approved&actor_name__exact=reviewer03",
        "date_month": f"{ADMIN}?created_at__month={month.month}&created_at__year={month.year}",
        "filter_pipeline_day": (
            f"{ADMIN}?pipeline__id__exact={entry.pipeline_id}&created_at__day={month.day}"
            f"&created_at__month={month.month}&created_at__year={month.year}"
        ),
    }


def fetch(client: Any, url: str) -> bytes:
    response = client.get(url)
    if response.status_code != 200:
        raise BenchError(f"GET {url} answered {response.status_code}, not 200")
    return bytes(response.content)


def rows_shown(content: bytes) -> int:
    return content.count(b'<th class="field-created_at')


def time_views(urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    User = get_user_model()
    admin, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    results = {}
    for name, url in urls.items():
        for _ in range(WARMUP):
            content = fetch(client, url)
        if name != "change_view" and rows_shown(content) == 0:
            raise BenchError(f"GET {url} shows no entries")
        if name == "change_view" and b"FAILED" in content:
            raise BenchError(f"GET {url}: the entry fails verification")
        with CaptureQueriesContext(connection) as captured:
            fetch(client, url)
        # Read now: the next request's request_started signal empties the query log.
        queries = len(captured.captured_queries)
        sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
        results[name] = {
            "url": url,
            **time_ms(partial(fetch, client, url), REPEATS),
            "queries": queries,
            "rows": rows_shown(content),
            "sql_ms": round(sql_ms, 1),
        }
    return results


# --- report ---------------------------------------------------------------------------


def print_table(results: dict[str, dict[str, Any]]) -> None:
    rows = [("view", "p50 ms", "p95 ms", "max ms", "queries", "SQL ms", "rows", "", "url")]
    for name, r in results.items():
        verdict = "ok" if r["p95_ms"] <= TARGET_P95_MS else "MISSED"
        rows.append(
            (
                name,
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                f"{r['max_ms']:.1f}",
                str(r["queries"]),
                f"{r['sql_ms']:.1f}",
                str(r["rows"]),
                verdict,
                r["url"],
            )
        )
    print_columns(rows)


# --- main -----------------------------------------------------------------------------


def time_verify() -> dict[str, Any]:
    """`verify_audit` over every chain, as the command runs it (one process per CPU)."""
    from pipelines.audit import verify

    jobs = os.cpu_count() or 1
    started = time.perf_counter()
    checked, problem = verify(jobs=jobs)
    seconds = time.perf_counter() - started
    if problem is not None:
        raise BenchError(f"verify_audit found a break in the seed: {problem}")
    rate = checked / seconds
    print(
        f"verify_audit: {checked:,} entries in {seconds:.1f} s, {rate:,.0f} entries/s ({jobs} jobs)"
    )
    return {
        "verify_entries": checked,
        "verify_s": round(seconds, 2),
        "verify_entries_per_s": round(rate),
        "verify_jobs": jobs,
        "verify_target_per_s": VERIFY_TARGET_PER_S,
    }


def run_bench() -> int:
    """Set up, seed if needed, time the views and verify_audit, print the table and the
    JSON line."""
    database_url = configure_admin_env()
    setup(database_url)
    with database_errors():
        entries, seed_s = prepare(database_url)
        results = time_views(views())
        verified = time_verify()
    print()
    print(f"{entries:,} audit entries; {REPEATS} timed requests per view after {WARMUP}")
    print_table(results)
    summary = {
        "entries": entries,
        "seed_s": round(seed_s, 1) if seed_s is not None else None,
        "repeats": REPEATS,
        "target_p95_ms": TARGET_P95_MS,
        "views": {
            name: {k: r[k] for k in ("p50_ms", "p95_ms", "queries")} for name, r in results.items()
        },
        "worst_p95_ms": max(r["p95_ms"] for r in results.values()),
        **verified,
    }
    summary.update(durability())
    missed = summary["worst_p95_ms"] > TARGET_P95_MS
    missed |= verified["verify_entries_per_s"] < VERIFY_TARGET_PER_S
    summary["targets_met"] = not missed
    print(json.dumps(summary))
    return 3 if missed else 0


if __name__ == "__main__":
    sys.exit(main("bench/audit_admin.py", run_bench))
