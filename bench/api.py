"""Benchmark of the REST API on a database of realistic size: lists, details, two writes.

    python bench/api.py

Uses the database of bench/pages.py (DATABASE_URL; default local PostgreSQL
`firefly_bench_orgs`: 1,000,000 audit entries and 10,000 open tasks in 100
organizations), seeded with its functions when missing, and CELERY_BROKER_URL (default
Redis database 14), which only receives the messages the writes send; no worker runs
and the queue is purged at the end.

The bench's reviewer gets an API token for the measured organization (`bench-org-00`)
and one for a small organization it also belongs to; an admin of both (`bench-api-admin`)
gets the same two, for the webhook list (20 subscriptions in the measured organization,
2 in the small one, to a closed local port and an event the bench never fires). With
Django's test client (DEBUG off), each GET endpoint (task lists, a task, runs list, a
run, its audit trail and checkpoints, the audit log and its next page, pipelines,
webhooks) is requested 3 times to warm up, once inside CaptureQueriesContext to count
queries, then 30 times timed. Its small variant (a 1-step run and task, a list narrowed
to that run or its pipeline) and its variant in the small organization are counted too:
the same number of queries on all of them shows the count does not grow with the data.
Then three writes are timed the same way, 30 times each after the warm-up and the
count: POST a run of `bench-api-gate` (one approval step for `reviewers`), then, once
those runs have opened their tasks, POST an approval of half of the tasks and a
rejection of the other half.

Against code before organizations (no `orgs` app), the token has no organization and
the small-organization variants are left out.

Prints a table, then as its last line one JSON object with the figures (`worst_p95_ms`
over every endpoint). Exits 1 when the bench cannot run, 3 when a request misses the
target (p95 <= 50 ms, queries independent of the data size).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import pages  # noqa: E402
from bench.audit_admin import configure_admin_env, prepare  # noqa: E402
from bench.common import (  # noqa: E402
    BenchError,
    configure_broker,
    database_errors,
    durability,
    main,
    print_columns,
    setup,
    time_ms,
)

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"
API = "/api/v1"
GATE = "bench-api-gate"
TOKEN_NAME = "bench-api"
MEASURED = "bench-org-00"
SMALL_ORG = "bench-org-10"
REPEATS = 30
WARMUP = 3
TARGET_P95_MS = 50.0
ADMIN = "bench-api-admin"  # an admin of both organizations: the webhook list is theirs
WEBHOOKS = 20  # subscriptions in the measured organization (2 in the small one)
HOOK_URL = "http://127.0.0.1:9/bench-api"  # never called: no worker runs

# Code before organizations has no `orgs` app: tokens and pipelines have no organization.
ORGANIZATIONS = importlib.util.find_spec("orgs") is not None


def gate_spec() -> dict[str, Any]:
    return {
        "name": GATE,
        "description": "bench/api.py: one approval, started and approved through the API",
        "steps": [
            {
                "name": "review",
                "type": "approval",
                "config": {
                    "assignee_role": pages.ROLE,
                    "allow_self_approval": True,
                    "instructions": "Approve to finish the run.",
                },
            }
        ],
    }


# --- set-up ---------------------------------------------------------------------------


def organization_id(slug: str) -> int | None:
    if not ORGANIZATIONS:
        return None
    from orgs.models import Organization

    return Organization.objects.values_list("pk", flat=True).get(slug=slug)


def token_for(user: Any, slug: str) -> tuple[int, str]:
    """(token id, key) of a new one-hour token of `user` acting in `slug`."""
    from tokens.services import token_create

    lifetime = timedelta(hours=1)
    if ORGANIZATIONS:
        token, key = token_create(
            user=user, name=TOKEN_NAME, expires_in=lifetime, organization=organization_id(slug)
        )
    else:  # code before organizations: a token has none
        token, key = token_create(user=user, name=TOKEN_NAME, expires_in=lifetime)
    return token.pk, key


def webhooks_seeded() -> Any:
    """The admin of both organizations, with the bench's webhooks (created once)."""
    from django.contrib.auth import get_user_model

    from webhooks.models import Webhook
    from webhooks.services import webhook_create

    admin, _ = get_user_model().objects.get_or_create(username=ADMIN)
    if not ORGANIZATIONS:  # code before organizations: one tenant
        for _ in range(Webhook.objects.filter(url=HOOK_URL).count(), WEBHOOKS):
            webhook_create(url=HOOK_URL, events=["run.failed"], actor=admin)
        return admin
    from bench.audit_admin import join

    for slug, count in ((MEASURED, WEBHOOKS), (SMALL_ORG, 2)):
        org = organization_id(slug)
        assert org is not None
        join([admin], [org], role="admin")
        have = Webhook.objects.filter(url=HOOK_URL, organization_id=org).count()
        for _ in range(have, count):
            # A run that failed: never fired by the bench, so the writes stay as they are.
            webhook_create(url=HOOK_URL, events=["run.failed"], actor=admin, organization=org)
    return admin


def gate_pipeline() -> None:
    """`bench-api-gate` in the measured organization, startable by every member."""
    from pipelines import services

    if ORGANIZATIONS:
        services.pipeline_create(
            spec=gate_spec(), organization=organization_id(MEASURED), member_role="starter"
        )
    else:
        services.pipeline_create(spec=gate_spec())


def open_task(pipeline: str, offset: int, slug: str) -> tuple[int, int]:
    """(task id, run id) of the `offset`-th open task of `pipeline` in `slug`."""
    from approvals.models import HumanTask

    found = HumanTask.objects.filter(
        status=HumanTask.Status.OPEN, run__pipeline_version__pipeline__name=pipeline
    )
    if ORGANIZATIONS:
        found = found.filter(organization__slug=slug)
    return found.order_by("id").values_list("pk", "run_id")[offset]


def endpoints() -> dict[str, dict[str, str]]:
    """Each GET endpoint: its URL, its small variant and its small-organization variant."""
    from pipelines.models import Run

    big, small = f"{pages.PREFIX}-{pages.PIPELINES - 1:02d}", f"{pages.PREFIX}-00"
    task, _ = open_task(big, 0, MEASURED)
    _, run = open_task(big, 1, MEASURED)
    small_task, small_run = open_task(small, 0, MEASURED)
    audit_seq = Run.objects.values_list("audit_seq", flat=True).get(pk=run)
    if audit_seq < 40:
        raise BenchError(f"run {run} has {audit_seq} audit entries, expected about 50")
    found: dict[str, dict[str, str]] = {
        "tasks_mine": {
            "url": f"{API}/tasks/?mine=true",
            "small": f"{API}/tasks/?mine=true&run={small_run}",
        },
        "tasks_open": {
            "url": f"{API}/tasks/?status=open",
            "small": f"{API}/tasks/?status=open&run={small_run}",
        },
        "task": {"url": f"{API}/tasks/{task}/", "small": f"{API}/tasks/{small_task}/"},
        "runs": {"url": f"{API}/runs/", "small": f"{API}/runs/?pipeline={small}"},
        "run": {"url": f"{API}/runs/{run}/", "small": f"{API}/runs/{small_run}/"},
        "run_audit": {
            "url": f"{API}/runs/{run}/audit/",
            "small": f"{API}/runs/{small_run}/audit/",
        },
        "run_checkpoints": {
            "url": f"{API}/runs/{run}/checkpoints/",
            "small": f"{API}/runs/{small_run}/checkpoints/",
        },
        "audit": {"url": f"{API}/audit/", "small": f"{API}/audit/?run={small_run}"},
        "audit_next": {"url": "", "small": ""},  # the second cursor page, filled in later
        "pipelines": {"url": f"{API}/pipelines/"},
        "webhooks": {"url": f"{API}/webhooks/", "admin": "yes"},
    }
    if ORGANIZATIONS:
        other_task, other_run = open_task(small, 0, SMALL_ORG)
        for name, url in {
            "tasks_mine": f"{API}/tasks/?mine=true",
            "tasks_open": f"{API}/tasks/?status=open",
            "task": f"{API}/tasks/{other_task}/",
            "runs": f"{API}/runs/",
            "run": f"{API}/runs/{other_run}/",
            "run_audit": f"{API}/runs/{other_run}/audit/",
            "run_checkpoints": f"{API}/runs/{other_run}/checkpoints/",
            "audit": f"{API}/audit/",
            "pipelines": f"{API}/pipelines/",
            "webhooks": f"{API}/webhooks/",
        }.items():
            found[name]["small_org"] = url
    return found


# --- requests -------------------------------------------------------------------------


def request(client: Any, key: str, method: str, url: str, body: Any = None) -> Any:
    """The JSON of a GET (200) or POST (200 or 201) with the token; anything else fails."""
    headers = {"Authorization": f"Token {key}"}
    if method == "GET":
        response = client.get(url, headers=headers)
    else:
        response = client.post(url, body, content_type="application/json", headers=headers)
    if response.status_code not in ((200,) if method == "GET" else (200, 201)):
        raise BenchError(f"{method} {url} answered {response.status_code}: {response.content!r}")
    return response.json()


def count_queries(client: Any, key: str, method: str, url: str, body: Any = None) -> int:
    """Queries of one request, less the token's last-used UPDATE (at most once a minute,
    so it would make the count depend on when the request came)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        request(client, key, method, url, body)
    # Read now: the next request's request_started signal empties the query log.
    return sum(
        1 for q in captured.captured_queries if not q["sql"].startswith('UPDATE "tokens_apitoken"')
    )


def shows_data(name: str, content: Any) -> bool:
    if isinstance(content, dict) and "results" in content:
        return len(content["results"]) > 0
    return isinstance(content, dict) and "id" in content


def time_reads(
    client: Any, keys: dict[str, tuple[str, str | None]], urls: dict[str, dict[str, str]]
) -> dict[str, dict[str, Any]]:
    """Each endpoint with the reviewer's tokens, or the admin's where it says `admin`."""
    results: dict[str, dict[str, Any]] = {}
    for name, variants in urls.items():
        key, small_key = keys["admin" if variants.pop("admin", "") else "reviewer"]
        if name == "audit_next":
            # The audit log's second page, by the cursor its first page gave out.
            first = request(client, key, "GET", urls["audit"]["url"])
            second = request(client, key, "GET", urls["audit"]["small"])
            variants = {"url": first["next"] or "", "small": second["next"] or ""}
            if not variants["url"]:
                raise BenchError("the audit log has no second page")
            if not variants["small"]:
                variants.pop("small")
        url = variants["url"]
        for _ in range(WARMUP):
            content = request(client, key, "GET", url)
        if not shows_data(name, content):
            raise BenchError(f"GET {url} shows nothing")
        queries = count_queries(client, key, "GET", url)
        small = small_org = None
        if "small" in variants:
            request(client, key, "GET", variants["small"])
            small = count_queries(client, key, "GET", variants["small"])
        if "small_org" in variants and small_key is not None:
            if not shows_data(name, request(client, small_key, "GET", variants["small_org"])):
                raise BenchError(f"GET {variants['small_org']} shows nothing")
            small_org = count_queries(client, small_key, "GET", variants["small_org"])
        results[name] = {
            "url": url.replace("http://testserver", ""),
            **time_ms(partial(request, client, key, "GET", url), REPEATS),
            "queries": queries,
            "queries_small": small,
            "queries_small_org": small_org,
        }
    return results


def time_writes(client: Any, key: str) -> dict[str, dict[str, Any]]:
    """POST runs of the gate pipeline, open their tasks, POST an approval of half of them
    and a rejection of the other half."""
    from approvals.models import HumanTask
    from pipelines import services
    from pipelines.models import Run

    count = WARMUP + 1 + REPEATS
    runs_needed = 2 * count
    start_url = f"{API}/pipelines/{GATE}/runs/"
    body: dict[str, Any] = {"inputs": {}}
    for _ in range(WARMUP):
        request(client, key, "POST", start_url, body)
    start_queries = count_queries(client, key, "POST", start_url, body)
    start_timing = time_ms(partial(request, client, key, "POST", start_url, body), REPEATS)
    for _ in range(runs_needed - count):  # the runs the rejections need, untimed
        request(client, key, "POST", start_url, body)
    # No worker runs: the runs wait as started; advancing each here opens its task.
    runs = list(
        Run.objects.filter(pipeline_version__pipeline__name=GATE, status=Run.Status.PENDING)
        .order_by("-id")
        .values_list("pk", flat=True)[:runs_needed]
    )
    for run_id in runs:
        services.run_advance(run_id=run_id)
    tasks: Iterator[int] = iter(
        HumanTask.objects.filter(run_id__in=runs, status=HumanTask.Status.OPEN)
        .order_by("id")
        .values_list("pk", flat=True)
    )

    def task_url(action: str) -> str:
        try:
            return f"{API}/tasks/{next(tasks)}/{action}/"
        except StopIteration:
            raise BenchError(f"fewer than {runs_needed} tasks opened by the runs started") from None

    results = {"start_run": {"url": f"POST {start_url}", **start_timing, "queries": start_queries}}
    for action, decision in (("approve", {"comment": "ok"}), ("reject", {"comment": "not now"})):

        def decide(action: str = action, decision: dict[str, str] = decision) -> None:
            request(client, key, "POST", task_url(action), decision)

        for _ in range(WARMUP):
            decide()
        queries = count_queries(client, key, "POST", task_url(action), decision)
        results[action] = {
            "url": f"POST {API}/tasks/{{id}}/{action}/",
            **time_ms(decide, REPEATS),
            "queries": queries,
        }
    return results


# --- report ---------------------------------------------------------------------------


def missed(r: dict[str, Any]) -> list[str]:
    """Why a request missed its target (reads and writes alike)."""
    why = []
    if r["p95_ms"] > TARGET_P95_MS:
        why.append("p95")
    if any(r.get(k) not in (None, r["queries"]) for k in ("queries_small", "queries_small_org")):
        why.append("queries grow")
    return why


def print_table(results: dict[str, dict[str, Any]]) -> None:
    def n(value: Any) -> str:
        return "-" if value is None else str(value)

    head = ("endpoint", "p50 ms", "p95 ms", "max ms", "queries", "small", "small org", "", "url")
    rows = [head]
    for name, r in results.items():
        rows.append(
            (
                name,
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                f"{r['max_ms']:.1f}",
                str(r["queries"]),
                n(r.get("queries_small")),
                n(r.get("queries_small_org")),
                "MISSED: " + ", ".join(missed(r)) if missed(r) else "ok",
                r["url"],
            )
        )
    print_columns(rows)


# --- main -----------------------------------------------------------------------------


def purge_broker() -> int:
    from firefly_site.celery import app

    return app.control.purge() or 0


def run_bench() -> int:
    """Set up, seed if needed, time the endpoints, clean up, print the table and JSON."""
    database_url = configure_admin_env()
    broker_url = configure_broker(DEFAULT_BROKER_URL)
    # The throttles would refuse the timed writes (120 a minute by default).
    os.environ.setdefault("FIREFLY_THROTTLE_RUN_START", "100000/min")
    os.environ.setdefault("FIREFLY_THROTTLE_DECIDE", "100000/min")
    # The bench's webhooks point at a closed local port; nothing is ever sent.
    os.environ.setdefault("FIREFLY_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1:9")
    os.environ.setdefault("FIREFLY_OUTBOUND_ALLOWED_ADDRESSES", "127.0.0.1")
    setup(database_url, broker_url)
    tokens: list[int] = []
    with database_errors():
        from django.test import Client

        from tokens.models import ApiToken

        entries, _ = prepare(database_url)
        pages.prepare_tasks()
        purge_broker()
        try:
            user = pages.reviewer()
            keys: dict[str, tuple[str, str | None]] = {}
            for role, person in (("reviewer", user), ("admin", webhooks_seeded())):
                token, key = token_for(person, MEASURED)
                tokens.append(token)
                small_key = None
                if ORGANIZATIONS:
                    small_token, small_key = token_for(person, SMALL_ORG)
                    tokens.append(small_token)
                keys[role] = (key, small_key)
            key = keys["reviewer"][0]
            gate_pipeline()
            client = Client()
            started = time.perf_counter()
            results = time_reads(client, keys, endpoints())
            results.update(time_writes(client, key))
            seconds = time.perf_counter() - started
        finally:
            ApiToken.objects.filter(pk__in=tokens).delete()
            purge_broker()
    print()
    where = f" in {MEASURED!r} (small org {SMALL_ORG!r})" if ORGANIZATIONS else ""
    print(
        f"{entries:,} audit entries, {pages.TASKS:,} open tasks; reviewer {pages.REVIEWER!r}"
        f" with an API token{where}; {REPEATS} timed requests per endpoint after {WARMUP}"
        f" ({seconds:.0f} s)"
    )
    print_table(results)
    failed = [name for name, r in results.items() if missed(r)]
    summary = {
        "entries": entries,
        "open_tasks": pages.TASKS,
        "organizations": ORGANIZATIONS,
        "repeats": REPEATS,
        "target_p95_ms": TARGET_P95_MS,
        "endpoints": {
            name: {
                k: r[k]
                for k in ("p50_ms", "p95_ms", "queries", "queries_small", "queries_small_org")
                if k in r
            }
            for name, r in results.items()
        },
        "worst_read_p95_ms": max(
            r["p95_ms"] for r in results.values() if not r["url"].startswith("POST")
        ),
        "worst_p95_ms": max(r["p95_ms"] for r in results.values()),
        "missed": {name: missed(results[name]) for name in failed},
    }
    summary.update(durability())
    print(json.dumps(summary))
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main("bench/api.py", run_bench))
