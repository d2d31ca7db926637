"""Throughput across many runs at once, on the workers `make run` starts.

    python bench/throughput.py

Reads DATABASE_URL and CELERY_BROKER_URL like the app (a local PostgreSQL database
`firefly_bench_throughput` and Redis db 5 when unset), migrates, starts two worker
processes of 32 threads (scripts/run.sh's defaults) and stops them at the end.

Scenarios:
  WARM-UP  50 runs of the chain (not counted)
  CHAIN    500 runs of a 10-step `noop` chain, started at once from 8 client threads
  FANOUT   200 runs of noop -> 20 parallel noops -> noop, started the same way
  SOAK     more chain runs until the workers executed 50,000 steps: their memory (RSS)
           after the warm-up and at the end

Durable steps per second count committed steps (each with its checkpoint and audit
entry) from the first run's creation to the last run's end, as the rows record them.
CPU per chain step is the workers' and, for a local server, PostgreSQL's (its processes
and the backends its postmaster reaped). BENCH_SOAK_STEPS=0 skips the soak for a quick
comparison (the memory figure then covers CHAIN and FANOUT only).
"Handoff" is the time from a step's predecessor finishing (its commit) to the step
starting. The JSON records PostgreSQL's fsync and synchronous_commit: a figure without
durability does not count. Exits 1 when a target is missed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
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
from bench.engine import (  # noqa: E402
    WORKER_ARGS_MAKE_RUN,
    WORKERS_MAKE_RUN,
    create_pipeline,
    linear_spec,
    purge_broker,
    workers,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/firefly_bench_throughput"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/5"

CHAIN_RUNS, CHAIN_STEPS = 500, 10
FANOUT_RUNS, FANOUT_WIDTH = 200, 20
WARMUP_RUNS = 50
SOAK_STEPS = int(os.environ.get("BENCH_SOAK_STEPS", "50000"))  # 0: RSS over CHAIN and FANOUT only
CLIENTS = 8
RUN_TIMEOUT_S = 600
POLL_S = 0.5  # only to notice the end; the figures come from the rows

TARGETS = {
    "chain_steps_per_s": (">=", 1000.0),
    "run_start_p95_ms": ("<=", 3.0),
    "rss_growth_mb": ("<=", 50.0),
}


def fanout_spec(name: str, width: int) -> dict[str, Any]:
    branches = [f"b{i:03d}" for i in range(width)]
    return {
        "name": name,
        "description": f"bench: noop, {width} parallel noops, noop",
        "steps": [
            {"name": "start", "type": "noop"},
            *({"name": b, "type": "noop", "after": ["start"]} for b in branches),
            {"name": "join", "type": "noop", "after": branches},
        ],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def start_runs(pipeline: str, count: int) -> tuple[list[int], list[float]]:
    """`count` runs started from CLIENTS threads at once: (run ids, run_start ms each)."""
    from django.db import connection

    from pipelines import services

    ids: list[int] = []
    timings: list[float] = []
    lock = threading.Lock()
    gate = threading.Barrier(CLIENTS)
    errors: list[BaseException] = []

    def client(share: int) -> None:
        mine, times = [], []
        try:
            gate.wait()
            for _ in range(share):
                began = time.perf_counter()
                run = services.run_start(pipeline=pipeline, inputs={})
                times.append((time.perf_counter() - began) * 1000)
                mine.append(run.pk)
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)
        finally:
            connection.close()
        with lock:
            ids.extend(mine)
            timings.extend(times)

    shares = [count // CLIENTS + (1 if i < count % CLIENTS else 0) for i in range(CLIENTS)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"run_start failed: {errors[0]!r}")
    return ids, timings


def wait_finished(run_ids: list[int]) -> None:
    from pipelines.models import Run

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        rows = Run.objects.filter(pk__in=run_ids)
        if rows.filter(status__in=Run.FINISHED).count() == len(run_ids):
            bad = rows.exclude(status=Run.Status.SUCCEEDED).values_list("pk", "status", "error")
            if bad.exists():
                raise BenchError(f"runs did not succeed: {list(bad[:3])}")
            return
        if time.monotonic() > deadline:
            raise BenchError(f"runs not finished after {RUN_TIMEOUT_S}s")
        time.sleep(POLL_S)


def measure(run_ids: list[int]) -> dict[str, float]:
    """Steps per second and handoff times, from the rows the runs wrote."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), min(r.created_at), max(r.finished_at) FROM pipelines_steprun s"
            " JOIN pipelines_run r ON r.id = s.run_id"
            " WHERE s.run_id = ANY(%s) AND s.status = 'succeeded'",
            [run_ids],
        )
        steps, first, last = cursor.fetchone()
        # A step's start less the latest finish among the steps before it in its run.
        cursor.execute(
            "SELECT extract(epoch FROM s.started_at - max(p.finished_at)) * 1000"
            " FROM pipelines_steprun s JOIN pipelines_steprun p"
            "   ON p.run_id = s.run_id AND p.finished_at <= s.started_at AND p.id <> s.id"
            " WHERE s.run_id = ANY(%s) AND s.started_at IS NOT NULL"
            " GROUP BY s.id, s.started_at",
            [run_ids],
        )
        handoffs = [float(row[0]) for row in cursor.fetchall()]
    seconds = (last - first).total_seconds()
    return {
        "steps": steps,
        "seconds": round(seconds, 2),
        "steps_per_s": round(steps / seconds, 1) if seconds else 0.0,
        "handoff_p50_ms": round(percentile(handoffs, 50), 1),
        "handoff_p95_ms": round(percentile(handoffs, 95), 1),
    }


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


def cpu_s(pids: list[int], children: bool = False) -> float:
    """CPU seconds (user + system) these processes used so far; with `children`, also
    what their exited children used (PostgreSQL's postmaster: its closed backends)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if children:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / ticks


def postgres_pids() -> list[int]:
    """The local PostgreSQL server's processes (empty when it runs elsewhere)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuMeter:
    """CPU the workers and the local PostgreSQL used between start() and stop()."""

    def __init__(self, worker_pids: list[int]) -> None:
        self.worker_pids = worker_pids

    def _read(self) -> tuple[float, float]:
        return cpu_s(self.worker_pids), cpu_s(postgres_pids(), children=True)

    def start(self) -> None:
        self.began = self._read()

    def per_step_ms(self, steps: int) -> tuple[float, float]:
        workers, postgres = self._read()
        return (
            round((workers - self.began[0]) * 1000 / max(steps, 1), 2),
            round((postgres - self.began[1]) * 1000 / max(steps, 1), 2),
        )


def verdicts(figures: dict[str, Any]) -> dict[str, bool]:
    met = {}
    for key, (op, target) in TARGETS.items():
        value = figures[key]
        met[key] = value >= target if op == ">=" else value <= target
    return met


def run_bench() -> int:
    database_url = configure_env(DEFAULT_DATABASE_URL)
    broker_url = configure_broker(DEFAULT_BROKER_URL)
    setup(database_url, broker_url)
    purge_broker()
    stamp = int(time.time())
    chain = create_pipeline(linear_spec(f"tp-chain-{stamp}", CHAIN_STEPS))
    fanout = create_pipeline(fanout_spec(f"tp-fanout-{stamp}", FANOUT_WIDTH))
    with (
        tempfile.TemporaryDirectory(prefix="firefly-throughput-") as logs,
        workers("tp", WORKERS_MAKE_RUN, WORKER_ARGS_MAKE_RUN, Path(logs)) as group,
    ):
        pids = [proc.pid for proc in group.procs]
        warm_ids, _ = start_runs(chain, WARMUP_RUNS)
        wait_finished(warm_ids)
        rss_start = rss_mb(pids)
        executed = WARMUP_RUNS * CHAIN_STEPS

        meter = CpuMeter(pids)
        meter.start()
        chain_ids, chain_starts = start_runs(chain, CHAIN_RUNS)
        wait_finished(chain_ids)
        chain_figures = measure(chain_ids)
        chain_cpu = meter.per_step_ms(int(chain_figures["steps"]))
        executed += int(chain_figures["steps"])

        fanout_ids, fanout_starts = start_runs(fanout, FANOUT_RUNS)
        wait_finished(fanout_ids)
        fanout_figures = measure(fanout_ids)
        executed += int(fanout_figures["steps"])

        while executed < SOAK_STEPS:
            soak_ids, _ = start_runs(chain, CHAIN_RUNS)
            wait_finished(soak_ids)
            executed += CHAIN_RUNS * CHAIN_STEPS
        rss_end = rss_mb(pids)

    starts = chain_starts + fanout_starts
    figures: dict[str, Any] = {
        "chain_steps_per_s": chain_figures["steps_per_s"],
        "fanout_steps_per_s": fanout_figures["steps_per_s"],
        "run_start_p50_ms": round(percentile(starts, 50), 2),
        "run_start_p95_ms": round(percentile(starts, 95), 2),
        "chain_handoff_p95_ms": chain_figures["handoff_p95_ms"],
        "fanout_handoff_p95_ms": fanout_figures["handoff_p95_ms"],
        "chain_worker_cpu_ms_per_step": chain_cpu[0],
        "chain_postgres_cpu_ms_per_step": chain_cpu[1],
        "chain_seconds": chain_figures["seconds"],
        "fanout_seconds": fanout_figures["seconds"],
        "steps_executed": executed,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_growth_mb": round(rss_end - rss_start, 1),
        **durability(),
        "workers": f"{WORKERS_MAKE_RUN} x {' '.join(WORKER_ARGS_MAKE_RUN[:4])}",
        "clients": CLIENTS,
    }
    met = verdicts(figures)
    rows = [["figure", "value", "target", ""]]
    for key in (
        "chain_steps_per_s",
        "fanout_steps_per_s",
        "run_start_p50_ms",
        "run_start_p95_ms",
        "chain_handoff_p95_ms",
        "fanout_handoff_p95_ms",
        "chain_worker_cpu_ms_per_step",
        "chain_postgres_cpu_ms_per_step",
        "rss_start_mb",
        "rss_end_mb",
        "rss_growth_mb",
    ):
        target = " ".join(str(t) for t in TARGETS[key]) if key in TARGETS else ""
        verdict = ("met" if met[key] else "MISSED") if key in met else ""
        rows.append([key, str(figures[key]), target, verdict])
    print_columns(rows, right={1})
    print(f"fsync={figures['fsync']} synchronous_commit={figures['synchronous_commit']}")
    figures["targets_met"] = all(met.values())
    print(json.dumps(figures))
    return 0 if figures["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main("bench/throughput.py", run_bench))
