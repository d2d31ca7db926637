"""Benchmark of the latency from an approval's commit to the start of the next step.

    python bench/approval_latency.py

Reads DATABASE_URL and CELERY_BROKER_URL like the app; when unset it uses a local
PostgreSQL database `firefly_bench_approval` and Redis db 13 (never the SQLite file).
It creates and migrates the database, purges the broker queue, starts one Celery worker
(threads x 8) and stops it at the end, even on error. Set-up and conventions come from
bench/common.py, the worker from bench/engine.py.

Pipeline `latency`: an `approval` step `gate` assigned to a reviewer, then a `noop` step
`next`. For each of 200 runs (after 10 warm-ups): start the run as another user, wait
until its approval task is open and the worker is idle, then approve it with
`approvals.services.task_approve` in this process. The decision's transaction queues
`next` with `transaction.on_commit`, so nothing polls on that path. The worker sets
`next`'s `started_at` when it claims the step; the figure is that timestamp less the
moment the decision committed. Both clocks are this machine's.

The commit moment is taken when the decision's COMMIT returns (a hook on this
process's connection), before the on-commit callbacks send the message. The time
when `task_approve` returns (after the callbacks) is reported too; the figure from it
is the smaller one. This process polls the database every 20 ms only to notice that
the run finished: the figures come from the rows' own timestamps, so the poll adds
nothing to them.

Prints a table, then as its last line one JSON object with p50_ms, p95_ms, p99_ms.

Exits 3 when the p95 misses its target.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/firefly_bench_approval"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/13"

PIPELINE = "latency"
REVIEWER = "bench-reviewer"
STARTER = "bench-starter"
SPEC: dict[str, Any] = {
    "name": PIPELINE,
    "description": "bench: an approval, then a noop",
    "steps": [
        {"name": "gate", "type": "approval", "config": {"assignee": REVIEWER}},
        {"name": "next", "type": "noop", "after": ["gate"]},
    ],
}

APPROVALS = 200
WARMUPS = 10
TARGET_P95_MS = 50.0
PERCENTILES = (50, 95, 99)

TASK_POLL_S = 0.01  # waiting for the task to open (not measured)
DONE_POLL_S = 0.02  # only to notice the end; the figures come from the rows
SETTLE_S = 0.05  # after the worker reports idle, before the decision
TASK_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 30.0
STEP_TIMEOUT_S = 30.0


# --- the commit moment ----------------------------------------------------------------


@contextmanager
def commit_clock() -> Iterator[list[datetime]]:
    """Record `timezone.now()` each time this thread's connection COMMIT returns.

    Wraps the wrapper's `_commit` on this connection only; `atomic` calls it before it
    runs the on-commit callbacks, so the time is the commit's, not the enqueue's.
    """
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.utils import timezone

    wrapper: Any = connections[DEFAULT_DB_ALIAS]
    original: Callable[[], Any] = wrapper._commit
    times: list[datetime] = []

    def _commit() -> Any:
        result = original()
        times.append(timezone.now())
        return result

    wrapper._commit = _commit
    try:
        yield times
    finally:
        del wrapper._commit


# --- set-up ---------------------------------------------------------------------------


def create_users() -> tuple[Any, Any]:
    """The reviewer the approval is assigned to, and the user who starts the runs."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    reviewer, _ = users.get_or_create(username=REVIEWER)
    starter, _ = users.get_or_create(username=STARTER)
    return reviewer, starter


def queue_length() -> int:
    import redis

    from firefly_site.celery import app

    client = redis.Redis.from_url(app.conf.broker_url)
    return int(client.llen(app.conf.task_default_queue))


# --- one approval ---------------------------------------------------------------------


@dataclass
class Sample:
    run_id: int
    commit_to_start_ms: float  # COMMIT returned -> `next` claimed by the worker
    return_to_start_ms: float  # task_approve returned -> `next` claimed
    approve_call_ms: float  # task_approve, whole call
    to_commit_ms: float  # task_approve called -> its COMMIT returned
    callbacks_ms: float  # COMMIT returned -> task_approve returned (on-commit callbacks)
    commit_to_finish_ms: float  # COMMIT returned -> run finished


def wait_task_open(run_id: int) -> int:
    from approvals.models import HumanTask

    deadline = time.monotonic() + TASK_TIMEOUT_S
    while True:
        task_id = (
            HumanTask.objects.filter(run_id=run_id, step_name="gate", status=HumanTask.Status.OPEN)
            .values_list("pk", flat=True)
            .first()
        )
        if task_id is not None:
            return task_id
        if time.monotonic() > deadline:
            raise BenchError(
                f"run {run_id}: its approval task did not open within {TASK_TIMEOUT_S:g}s"
            )
        time.sleep(TASK_POLL_S)


def wait_idle(group: Workers, run_ids: list[int]) -> None:
    """No step of ours queued or running, no message queued, the worker running nothing."""
    from firefly_site.celery import app
    from pipelines.models import StepRun

    active_steps = [StepRun.Status.QUEUED, StepRun.Status.RUNNING]
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while True:
        busy_steps = StepRun.objects.filter(run_id__in=run_ids, status__in=active_steps).count()
        queued = queue_length()
        busy_tasks = -1
        if not busy_steps and not queued:
            inspect = app.control.inspect(destination=group.names, timeout=1.0, limit=1)
            active = inspect.active() or {}
            reserved = inspect.reserved() or {}
            if set(active) == set(group.names) and set(reserved) == set(group.names):
                busy_tasks = sum(len(v) for v in active.values()) + sum(
                    len(v) for v in reserved.values()
                )
                if busy_tasks == 0:
                    time.sleep(SETTLE_S)
                    return
        if time.monotonic() > deadline:
            raise BenchError(
                f"the worker is not idle after {IDLE_TIMEOUT_S:g}s: {busy_steps} step(s) "
                f"queued/running, {queued} message(s) queued, {busy_tasks} task(s) active "
                "or reserved (-1: not asked or no reply)"
            )
        time.sleep(TASK_POLL_S)


def approve_once(group: Workers, reviewer: Any, starter: Any, run_ids: list[int]) -> Sample:
    from django.utils import timezone

    from approvals import services as approvals
    from pipelines import services as pipelines
    from pipelines.models import Run, StepRun

    run = pipelines.run_start(pipeline=PIPELINE, inputs={}, actor=starter)
    run_ids.append(run.pk)
    task_id = wait_task_open(run.pk)
    wait_idle(group, run_ids)

    with commit_clock() as commits:
        before = timezone.now()
        approvals.task_approve(task_id=task_id, user=reviewer)
        returned = timezone.now()
    if not commits:
        raise BenchError(f"run {run.pk}: task_approve did not COMMIT")
    # The first COMMIT is the decision's; on-commit callbacks may commit again after it
    # (the webhook listener records its deliveries in a transaction of its own).
    committed = commits[0]

    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        started_at = (
            StepRun.objects.filter(run_id=run.pk, step_name="next")
            .order_by("-generation", "-attempt")
            .values_list("started_at", flat=True)
            .first()
        )
        status, error, finished_at = (
            Run.objects.filter(pk=run.pk).values_list("status", "error", "finished_at").get()
        )
        if status in Run.FINISHED:
            if status != Run.Status.SUCCEEDED:
                raise BenchError(f"run {run.pk} ended {status}: {error}")
            break
        if time.monotonic() > deadline:
            where = "started" if started_at else "did not start"
            raise BenchError(
                f"run {run.pk}: step `next` {where} and the run is still {status} "
                f"{STEP_TIMEOUT_S:g}s after the approval committed; see the worker log"
            )
        time.sleep(DONE_POLL_S)
    if started_at is None or finished_at is None:
        raise BenchError(f"run {run.pk} succeeded without timestamps on `next` or the run")

    def ms(later: datetime, earlier: datetime) -> float:
        return (later - earlier).total_seconds() * 1000

    return Sample(
        run_id=run.pk,
        commit_to_start_ms=ms(started_at, committed),
        return_to_start_ms=ms(started_at, returned),
        approve_call_ms=ms(returned, before),
        to_commit_ms=ms(committed, before),
        callbacks_ms=ms(returned, committed),
        commit_to_finish_ms=ms(finished_at, committed),
    )


def bench(log_dir: Path) -> list[Sample]:
    from pipelines import services as pipelines

    reviewer, starter = create_users()
    pipelines.pipeline_create(spec=SPEC)
    run_ids: list[int] = []
    with workers("approval", 1, WORKER_ARGS_LINEAR, log_dir) as group:
        for _ in range(WARMUPS):
            approve_once(group, reviewer, starter, run_ids)
        samples = []
        for i in range(APPROVALS):
            samples.append(approve_once(group, reviewer, starter, run_ids))
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{APPROVALS} approvals", flush=True)
    return samples


# --- report ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float]:
        figures = {f"p{q}": round(percentile(values, q), 2) for q in PERCENTILES}
        figures["max"] = round(max(values), 2)
        figures["min"] = round(min(values), 2)
        return figures

    latency = stats([s.commit_to_start_ms for s in samples])
    after_return = stats([s.return_to_start_ms for s in samples])
    call = stats([s.approve_call_ms for s in samples])
    finish = stats([s.commit_to_finish_ms for s in samples])
    to_commit = stats([s.to_commit_ms for s in samples])
    callbacks = stats([s.callbacks_ms for s in samples])
    return {
        "p50_ms": latency["p50"],
        "p95_ms": latency["p95"],
        "p99_ms": latency["p99"],
        "max_ms": latency["max"],
        "min_ms": latency["min"],
        "n": len(samples),
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": latency["p95"] <= TARGET_P95_MS,
        "from_return_p50_ms": after_return["p50"],
        "from_return_p95_ms": after_return["p95"],
        "from_return_p99_ms": after_return["p99"],
        "approve_call_p50_ms": call["p50"],
        "approve_call_p95_ms": call["p95"],
        "approve_to_commit_p50_ms": to_commit["p50"],
        "approve_callbacks_p50_ms": callbacks["p50"],
        "to_finished_p50_ms": finish["p50"],
        "to_finished_p95_ms": finish["p95"],
        "to_finished_p99_ms": finish["p99"],
        "warmups": WARMUPS,
        "_table": {
            "latency": latency,
            "after_return": after_return,
            "call": call,
            "to_commit": to_commit,
            "callbacks": callbacks,
            "finish": finish,
        },
    }


def print_table(r: dict[str, Any]) -> None:
    t = r["_table"]
    verdict = "ok" if r["meets_target"] else "MISSED"

    def row(name: str, s: dict[str, float], target: str = "", ok: str = "") -> tuple[str, ...]:
        return (
            name,
            f"{s['p50']:.2f}",
            f"{s['p95']:.2f}",
            f"{s['p99']:.2f}",
            f"{s['max']:.2f}",
            target,
            ok,
        )

    rows = [
        ("ms, over " + str(r["n"]) + " approvals", "p50", "p95", "p99", "max", "target", ""),
        row("commit -> next step started", t["latency"], f"p95 <= {TARGET_P95_MS:g}", verdict),
        row("task_approve returned -> started", t["after_return"], "(context)"),
        row("task_approve call", t["call"], "(context)"),
        row("  of which until COMMIT returned", t["to_commit"], "(context)"),
        row("  of which on-commit callbacks", t["callbacks"], "(context)"),
        row("commit -> run finished", t["finish"], "(context)"),
    ]
    print_columns(rows, right=(1, 2, 3, 4))


# --- main -----------------------------------------------------------------------------


def run_bench() -> int:
    """Set up, time the approvals, print the table and the JSON line."""
    database_url = configure_env(DEFAULT_DATABASE_URL)
    broker_url = configure_broker(DEFAULT_BROKER_URL)
    setup(database_url, broker_url)
    purged = purge_broker()
    log_dir = Path(tempfile.mkdtemp(prefix="firefly-bench-approval-"))
    print(f"purged {purged} queued message(s); worker log in {log_dir}")
    print(f"{WARMUPS} warm-up approvals, then {APPROVALS} measured", flush=True)
    samples = bench(log_dir)
    results = summarize(samples)
    print()
    print_table(results)
    del results["_table"]
    results.update(durability())
    print(json.dumps(results))
    return 0 if results["meets_target"] else 3


if __name__ == "__main__":
    sys.exit(main("bench/approval_latency.py", run_bench))
