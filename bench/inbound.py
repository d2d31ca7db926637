"""Benchmark of an inbound hook: from the delivery's request to its run's first step
started by a worker.

    python bench/inbound.py

Reads DATABASE_URL and CELERY_BROKER_URL like the app; when unset it uses a local
PostgreSQL database `firefly_bench_inbound` and Redis db 12 (never the SQLite file). It
creates and migrates the database, purges the broker queue, starts one Celery worker
(threads x 8) and stops it at the end, even on error. Set-up and conventions come from
bench/common.py, the worker from bench/engine.py, waiting for it to be idle from
bench/approval_latency.py.

Pipeline `inbound-latency`: an input schema, a `noop` step `first`, then a `noop` step
`next`. Hook `bench` on it: HMAC-SHA256 signature of the raw body, a delivery id header,
a JMESPath mapping of two inputs, no rate limit. For each of 200 deliveries (after 10
warm-ups): wait until the worker is idle, then POST a signed delivery to
`/hooks/<token>/` through Django's whole request path (middleware, view, service) with
the test client in this process, and wait until the run finishes. The worker sets
`first`'s `started_at` when it claims the step; the figure is that timestamp less the
moment the request was sent. Both clocks are this machine's. The request's own latency
(until its 202 answer) is reported too, as is a duplicate delivery's (answered from the
delivery record, nothing started). For comparison under the same load, each delivery
alternates with a run of the same pipeline started through the API
(`POST /api/v1/pipelines/{name}/runs/` with an API token), timed the same way.

Prints a table, then as its last line one JSON object with p50_ms, p95_ms, p99_ms.

Exits 3 when the p95 misses its target.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.approval_latency import percentile, wait_idle  # noqa: E402
from bench.common import (  # noqa: E402
    BenchError,
    configure_broker,
    configure_env,
    durability,
    main,
    print_columns,
    setup,
)
from bench.engine import WORKER_ARGS_LINEAR, Workers, purge_broker, workers  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/firefly_bench_inbound"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"

PIPELINE = "inbound-latency"
HOOK = "bench"
SPEC: dict[str, Any] = {
    "name": PIPELINE,
    "description": "bench: a delivery starts it; two noops",
    "input_schema": {
        "type": "object",
        "required": ["amount", "payee"],
        "properties": {"amount": {"type": "number"}, "payee": {"type": "string"}},
    },
    "steps": [
        {"name": "first", "type": "noop"},
        {"name": "next", "type": "noop", "after": ["first"]},
    ],
}
MAPPING = {"amount": "data.amount", "payee": "data.payee.name"}

DELIVERIES = 200
WARMUPS = 10
TARGET_P95_MS = 30.0
PERCENTILES = (50, 95, 99)

DONE_POLL_S = 0.02  # only to notice the end; the figures come from the rows
STEP_TIMEOUT_S = 30.0


@dataclass
class Sample:
    run_id: int
    to_first_step_ms: float  # request sent -> `first` claimed by the worker
    request_ms: float  # request sent -> its 202 answer
    duplicate_ms: float  # the same delivery again -> its 200 answer
    to_finish_ms: float  # request sent -> run finished
    api_to_first_step_ms: float = 0.0  # the same, for a run started through the API
    api_request_ms: float = 0.0


def create_hook() -> Any:
    from inbound import services as inbound
    from inbound.models import InboundHook
    from pipelines import services as pipelines

    pipelines.pipeline_create(spec=SPEC)
    InboundHook.objects.filter(pipeline__name=PIPELINE, name=HOOK).delete()
    return inbound.hook_create(
        pipeline=PIPELINE,
        name=HOOK,
        input_mapping=MAPPING,
        delivery_id_header="X-Delivery",
        rate_limit="",
    )


def api_token() -> str:
    """A token of an admin of the default organization (who may start the pipeline)."""
    from django.contrib.auth import get_user_model

    from orgs.models import Membership, Organization
    from tokens.services import token_create

    user, _ = get_user_model().objects.get_or_create(username="bench-api")
    Membership.objects.get_or_create(
        user=user,
        organization=Organization.objects.default(),
        defaults={"role": Membership.Role.ADMIN},
    )
    _, key = token_create(user=user, name="bench")
    return key


def wait_done(run_id: int) -> tuple[datetime, datetime]:
    """When the run's `first` step started and when the run finished."""
    from pipelines.models import Run, StepRun

    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        status, error, finished_at = (
            Run.objects.filter(pk=run_id).values_list("status", "error", "finished_at").get()
        )
        if status in Run.FINISHED:
            if status != Run.Status.SUCCEEDED:
                raise BenchError(f"run {run_id} ended {status}: {error}")
            break
        if time.monotonic() > deadline:
            raise BenchError(f"run {run_id} is still {status} {STEP_TIMEOUT_S:g}s on")
        time.sleep(DONE_POLL_S)
    first_started = (
        StepRun.objects.filter(run_id=run_id, step_name="first")
        .order_by("generation", "attempt")
        .values_list("started_at", flat=True)
        .first()
    )
    if first_started is None or finished_at is None:
        raise BenchError(f"run {run_id} succeeded without timestamps on `first` or the run")
    return first_started, finished_at


def ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


def start_by_api(group: Workers, client: Any, key: str, run_ids: list[int]) -> tuple[float, float]:
    from django.utils import timezone

    wait_idle(group, run_ids)
    sent = timezone.now()
    started = time.perf_counter()
    response = client.post(
        f"/api/v1/pipelines/{PIPELINE}/runs/",
        data={"inputs": {"amount": 12.5, "payee": "ACME"}},
        content_type="application/json",
        headers={"Authorization": f"Token {key}"},
    )
    request_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 201:
        raise BenchError(f"the API start was answered {response.status_code}")
    run_id = response.json()["id"]
    run_ids.append(run_id)
    first_started, _ = wait_done(run_id)
    return ms(first_started, sent), request_ms


def deliver_once(group: Workers, client: Any, hook: Any, run_ids: list[int]) -> Sample:
    from django.utils import timezone

    from inbound import signatures

    body = json.dumps({"data": {"amount": 12.5, "payee": {"name": "ACME"}}}).encode()
    headers = {
        "X-Hub-Signature-256": signatures.sign_hmac(hook.new_secret, body),
        "X-Delivery": str(uuid.uuid4()),
    }
    wait_idle(group, run_ids)

    sent = timezone.now()
    started = time.perf_counter()
    response = client.post(hook.path, data=body, content_type="application/json", headers=headers)
    request_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 202:
        raise BenchError(f"the delivery was answered {response.status_code}: {response.content!r}")
    run_id = response.json()["run"]
    run_ids.append(run_id)

    first_started, finished_at = wait_done(run_id)

    # After the run, so that it does not compete with the worker for the figure above.
    started = time.perf_counter()
    again = client.post(hook.path, data=body, content_type="application/json", headers=headers)
    duplicate_ms = (time.perf_counter() - started) * 1000
    if again.status_code != 200 or again.json()["run"] != run_id:
        raise BenchError(f"the repeated delivery was answered {again.status_code}")
    return Sample(
        run_id=run_id,
        to_first_step_ms=ms(first_started, sent),
        request_ms=request_ms,
        duplicate_ms=duplicate_ms,
        to_finish_ms=ms(finished_at, sent),
    )


def bench(log_dir: Path) -> list[Sample]:
    from django.test import Client

    hook = create_hook()
    key = api_token()
    client = Client()
    run_ids: list[int] = []
    with workers("inbound", 1, WORKER_ARGS_LINEAR, log_dir) as group:
        for _ in range(WARMUPS):
            deliver_once(group, client, hook, run_ids)
            start_by_api(group, client, key, run_ids)
        samples = []
        for i in range(DELIVERIES):
            sample = deliver_once(group, client, hook, run_ids)
            sample.api_to_first_step_ms, sample.api_request_ms = start_by_api(
                group, client, key, run_ids
            )
            samples.append(sample)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{DELIVERIES} deliveries", flush=True)
    return samples


# --- report ---------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    figures = {f"p{q}": round(percentile(values, q), 2) for q in PERCENTILES}
    figures["max"] = round(max(values), 2)
    return figures


def summarize(samples: list[Sample]) -> dict[str, Any]:
    latency = stats([s.to_first_step_ms for s in samples])
    request = stats([s.request_ms for s in samples])
    duplicate = stats([s.duplicate_ms for s in samples])
    finish = stats([s.to_finish_ms for s in samples])
    api = stats([s.api_to_first_step_ms for s in samples])
    api_request = stats([s.api_request_ms for s in samples])
    return {
        "p50_ms": latency["p50"],
        "p95_ms": latency["p95"],
        "p99_ms": latency["p99"],
        "max_ms": latency["max"],
        "n": len(samples),
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": latency["p95"] <= TARGET_P95_MS,
        "request_p50_ms": request["p50"],
        "request_p95_ms": request["p95"],
        "duplicate_p50_ms": duplicate["p50"],
        "duplicate_p95_ms": duplicate["p95"],
        "to_finished_p50_ms": finish["p50"],
        "to_finished_p95_ms": finish["p95"],
        "api_start_p50_ms": api["p50"],
        "api_start_p95_ms": api["p95"],
        "api_request_p50_ms": api_request["p50"],
        "warmups": WARMUPS,
        "_table": {
            "latency": latency,
            "request": request,
            "duplicate": duplicate,
            "finish": finish,
            "api": api,
            "api_request": api_request,
        },
    }


def print_table(r: dict[str, Any]) -> None:
    t = r["_table"]
    verdict = "ok" if r["meets_target"] else "MISSED"

    def row(name: str, s: dict[str, float], target: str = "", ok: str = "") -> tuple[str, ...]:
        figures = tuple(f"{s[k]:.2f}" for k in ("p50", "p95", "p99", "max"))
        return (name, *figures, target, ok)

    rows = [
        (f"ms, over {r['n']} deliveries", "p50", "p95", "p99", "max", "target", ""),
        row("request -> first step started", t["latency"], f"p95 <= {TARGET_P95_MS:g}", verdict),
        row("request -> 202 answer", t["request"], "(context)"),
        row("same delivery again -> 200 answer", t["duplicate"], "(context)"),
        row("request -> run finished", t["finish"], "(context)"),
        row("API start -> first step started", t["api"], "(baseline)"),
        row("API start -> 201 answer", t["api_request"], "(baseline)"),
    ]
    print_columns(rows, right=(1, 2, 3, 4))


# --- main -----------------------------------------------------------------------------


def run_bench() -> int:
    """Set up, time the deliveries, print the table and the JSON line."""
    database_url = configure_env(DEFAULT_DATABASE_URL)
    # The baseline starts some 200 runs a minute through the API: above its rate limit.
    os.environ.setdefault("FIREFLY_THROTTLE_RUN_START", "100000/min")
    broker_url = configure_broker(DEFAULT_BROKER_URL)
    setup(database_url, broker_url)
    purged = purge_broker()
    log_dir = Path(tempfile.mkdtemp(prefix="firefly-bench-inbound-"))
    print(f"purged {purged} queued message(s); worker log in {log_dir}")
    print(f"{WARMUPS} warm-up deliveries, then {DELIVERIES} measured", flush=True)
    samples = bench(log_dir)
    results = summarize(samples)
    print()
    print_table(results)
    del results["_table"]
    results.update(durability())
    print(json.dumps(results))
    return 0 if results["meets_target"] else 3


if __name__ == "__main__":
    sys.exit(main("bench/inbound.py", run_bench))
