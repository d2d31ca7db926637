"""Benchmark of the execution engine on PostgreSQL + Redis or RabbitMQ with real Celery workers.

    python bench/engine.py

Reads DATABASE_URL and CELERY_BROKER_URL like the app; when unset it uses a local
PostgreSQL database `firefly_bench` and Redis db 14 (never the SQLite file). It creates
the database if needed, migrates it, purges the broker queue, starts its own workers for
each scenario and stops them at the end, even on error.

Scenarios:
  LINEAR   200 `noop` steps in a chain: ms per step (1 worker, threads x 8)
  RAW      a plain Celery chain of 200 no-op tasks on the same broker and worker setup
  FANOUT   noop -> 50 parallel 0.2 s `sleep` steps -> noop (the `make run` worker setup)
  SCALING  noop -> 100 parallel 0.2 s `sleep` steps -> noop, 1 vs 2 workers (threads x 10),
           and the control: 1 worker of twice the threads (x 20), the same thread slots as
           2 workers, so that its ratio shows what a second process adds beyond them
  STORAGE  checkpoint / audit / step row bytes per step of a LINEAR run

Prints a table, then as its last line one JSON object with the figures (and PostgreSQL's
fsync and synchronous_commit). Exits 1 when a target is missed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    signal_redis_url,
)

CELERY = ROOT / ".venv" / "bin" / "celery"

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/firefly_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"

# The workers `make run` starts, with its command line. They must match scripts/run.sh
# (WORKERS and WORKER_ARGS defaults, log level): two processes of 32 threads.
WORKERS_MAKE_RUN = 2
WORKER_ARGS_MAKE_RUN = ["--pool", "threads", "--concurrency", "32", "-l", "INFO"]
# The other scenarios log less and skip the cluster chatter (gossip, mingle, heartbeat):
# none of it changes how tasks are consumed.
WORKER_ARGS_QUIET = ["-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]
WORKER_ARGS_LINEAR = ["--pool", "threads", "--concurrency", "8", *WORKER_ARGS_QUIET]
SCALING_THREADS = 10
WORKER_ARGS_SCALING = [
    "--pool",
    "threads",
    "--concurrency",
    str(SCALING_THREADS),
    *WORKER_ARGS_QUIET,
]
WORKER_ARGS_SCALING_CONTROL = [
    "--pool",
    "threads",
    "--concurrency",
    str(2 * SCALING_THREADS),
    *WORKER_ARGS_QUIET,
]

LINEAR_STEPS = 200
LINEAR_WARMUP_STEPS = 20
RAW_TASKS = 200
FANOUT_WIDTH = 50
SCALING_WIDTH = 100
SLEEP_S = 0.2
REPEATS = 3
POLL_S = 0.05  # only to notice the end; the time comes from the run row

WORKER_READY_TIMEOUT_S = 60
WORKER_STOP_TIMEOUT_S = 15
LINEAR_TIMEOUT_S = 120
RAW_TIMEOUT_S = 60
FANOUT_TIMEOUT_S = 60
SCALING_TIMEOUT_S = 120

LINEAR_TARGET_MS = 1.0
FANOUT_TARGET_S = 0.6
SCALING_TARGET = 1.7
TARGETS = {
    "linear_ms_per_step": f"<= {LINEAR_TARGET_MS:g} ms/step",
    "fanout_s": f"<= {FANOUT_TARGET_S:g} s",
    "fanout_speedup_2_workers": f">= {SCALING_TARGET:g}x",
    "checkpoint_bytes_per_step": "linear in steps",
}


# --- set-up ---------------------------------------------------------------------------


def purge_broker() -> int:
    from firefly_site.celery import app

    return app.control.purge() or 0


# --- workers --------------------------------------------------------------------------


class Workers:
    """Celery worker subprocesses, each in its own process group, logging to a file."""

    def __init__(self, tag: str, count: int, args: list[str], log_dir: Path) -> None:
        """`args` follow `worker -n NAME`; see WORKER_ARGS_*."""
        self.tag = tag
        self.host = socket.gethostname()
        self.names = [f"bench{os.getpid()}-{tag}-{i}@{self.host}" for i in range(count)]
        self.args = args
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> None:
        env = os.environ.copy()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        for name in self.names:
            log = self.log_dir / f"{name.split('@')[0]}.log"
            self.logs.append(log)
            command = [str(CELERY), "-A", "firefly_site", "worker", "-n", name]
            command += self.args
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def wait_ready(self, timeout: float = WORKER_READY_TIMEOUT_S) -> None:
        from firefly_site.celery import app

        deadline = time.monotonic() + timeout
        waiting = set(self.names)
        while waiting:
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise BenchError(f"worker exited with {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise BenchError(f"workers not ready after {timeout:g}s: {sorted(waiting)}")
            for reply in app.control.ping(destination=sorted(waiting), timeout=0.5) or []:
                waiting -= set(reply)

    def stop(self) -> None:
        """SIGTERM each process group (warm shutdown), SIGKILL whatever is left."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        for proc in self.procs:
            # Threads pools have no children, but a group may still hold stragglers.
            _signal_group(proc, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for log in self.logs:
            text = log.read_text(errors="replace").splitlines() if log.exists() else []
            chunks.append(f"--- {log} (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(chunks)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@contextmanager
def workers(tag: str, count: int, args: list[str], log_dir: Path) -> Iterator[Workers]:
    """Started and ready workers for one scenario; stopped afterwards whatever happens."""
    group = Workers(tag, count, args, log_dir)
    try:
        group.start()
        group.wait_ready()
        yield group
    except BenchError as exc:
        raise BenchError(f"{exc}\n{group.log_tail()}") from exc
    finally:
        group.stop()


# --- runs -----------------------------------------------------------------------------


def linear_spec(name: str, steps: int) -> dict[str, Any]:
    names = [f"s{i:03d}" for i in range(steps)]
    return {
        "name": name,
        "description": f"bench: {steps} noop steps in a chain",
        "steps": [
            {"name": step, "type": "noop", **({"after": [names[i - 1]]} if i else {})}
            for i, step in enumerate(names)
        ],
    }


def fanout_spec(name: str, width: int, seconds: float) -> dict[str, Any]:
    branches = [f"b{i:03d}" for i in range(width)]
    return {
        "name": name,
        "description": f"bench: noop, {width} parallel {seconds:g}s sleeps, noop",
        "steps": [
            {"name": "start", "type": "noop"},
            *(
                {"name": b, "type": "sleep", "after": ["start"], "config": {"seconds": seconds}}
                for b in branches
            ),
            {"name": "join", "type": "noop", "after": branches},
        ],
    }


def create_pipeline(spec: dict[str, Any]) -> str:
    from pipelines import services

    services.pipeline_create(spec=spec)
    return str(spec["name"])


def timed_run(pipeline: str, timeout: float) -> tuple[float, int]:
    """Start a run and wait until it succeeds: (seconds from run_start, run id).

    The time is the run's own `finished_at` less the moment before `run_start`, so the
    slow poll (which would otherwise compete for the two cores) adds nothing to it.
    """
    from django.utils import timezone

    from pipelines import services
    from pipelines.models import Run

    started = time.perf_counter()
    started_at = timezone.now()
    run = services.run_start(pipeline=pipeline, inputs={})
    deadline = started + timeout
    while True:
        status, error, finished_at = (
            Run.objects.filter(pk=run.pk).values_list("status", "error", "finished_at").get()
        )
        if status == Run.Status.SUCCEEDED and finished_at is not None:
            return (finished_at - started_at).total_seconds(), run.pk
        if status in Run.FINISHED:
            raise BenchError(f"run {run.pk} of {pipeline} ended {status}: {error}")
        if time.perf_counter() > deadline:
            raise BenchError(
                f"run {run.pk} of {pipeline} still {status} after {timeout:g}s; "
                f"steps: {step_counts(run.pk)}"
            )
        time.sleep(POLL_S)


def step_counts(run_id: int) -> dict[str, int]:
    from django.db.models import Count

    from pipelines.models import StepRun

    rows = StepRun.objects.filter(run_id=run_id).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def repeat(measure: Callable[[], float], times: int = REPEATS) -> list[float]:
    return [measure() for _ in range(times)]


def row_bytes(table: str, run_id: int) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT sum(pg_column_size(t.*)) FROM {table} t WHERE run_id = %s", [run_id]
        )
        (total,) = cursor.fetchone()
    return int(total or 0)


def storage(run_id: int, steps: int) -> dict[str, float]:
    return {
        table: row_bytes(f"pipelines_{table}", run_id) / steps
        for table in ("checkpoint", "auditentry", "steprun")
    }


# --- scenarios ------------------------------------------------------------------------


def bench_linear_and_raw(log_dir: Path) -> dict[str, Any]:
    """LINEAR, STORAGE and RAW on one worker process, threads x 8."""
    warmup = create_pipeline(linear_spec("bench-linear-warmup", LINEAR_WARMUP_STEPS))
    linear = create_pipeline(linear_spec("bench-linear", LINEAR_STEPS))
    with workers("linear", 1, ["-I", "bench.rawtasks", *WORKER_ARGS_LINEAR], log_dir):
        _, warmup_run = timed_run(warmup, LINEAR_TIMEOUT_S)
        run_ids: list[int] = []

        def measure_linear() -> float:
            seconds, run_id = timed_run(linear, LINEAR_TIMEOUT_S)
            run_ids.append(run_id)
            return seconds * 1000 / LINEAR_STEPS

        linear_ms = repeat(measure_linear)

        raw_chain(10)  # warm-up
        raw_ms = repeat(lambda: raw_chain(RAW_TASKS) * 1000 / RAW_TASKS)

    return {
        "linear_ms": linear_ms,
        "raw_ms": raw_ms,
        "storage": storage(run_ids[-1], LINEAR_STEPS),
        "storage_short": storage(warmup_run, LINEAR_WARMUP_STEPS),
    }


def raw_chain(length: int) -> float:
    """Send a chain of `length` no-op tasks; seconds until its last task set its key."""
    import redis
    from celery import chain

    from bench.rawtasks import noop
    from firefly_site.celery import app

    client = redis.Redis.from_url(signal_redis_url(app.conf.broker_url))
    key = f"firefly-bench:raw-done:{uuid.uuid4().hex}"
    signatures = [noop.si() for _ in range(length - 1)] + [noop.si(key)]
    started = time.perf_counter()
    started_wall = time.time()
    chain(*signatures).apply_async()
    deadline = started + RAW_TIMEOUT_S
    while (finished_wall := client.get(key)) is None:
        if time.perf_counter() > deadline:
            raise BenchError(f"raw chain of {length} tasks did not finish in {RAW_TIMEOUT_S}s")
        time.sleep(POLL_S)
    client.delete(key)
    # The last task wrote when it ran, so the slow poll adds nothing to the figure.
    return float(finished_wall) - started_wall


def bench_fanout(log_dir: Path) -> list[float]:
    """FANOUT with the worker `make run` starts."""
    warmup = create_pipeline(fanout_spec("bench-fanout-warmup", FANOUT_WIDTH, 0))
    fanout = create_pipeline(fanout_spec("bench-fanout", FANOUT_WIDTH, SLEEP_S))
    # Exactly the command line of `make run`'s workers: INFO logging and all.
    with workers("fanout", WORKERS_MAKE_RUN, WORKER_ARGS_MAKE_RUN, log_dir):
        timed_run(warmup, FANOUT_TIMEOUT_S)
        return repeat(lambda: timed_run(fanout, FANOUT_TIMEOUT_S)[0])


# SCALING's set-ups: (label, worker processes, their arguments). The control has the
# thread slots of two processes in one.
SCALING_SETUPS = (
    ("1", 1, WORKER_ARGS_SCALING),
    ("2", 2, WORKER_ARGS_SCALING),
    ("control", 1, WORKER_ARGS_SCALING_CONTROL),
)


def bench_scaling(log_dir: Path) -> dict[str, list[float]]:
    """SCALING: the same wide pipeline on 1 and on 2 worker processes, and on 1 worker
    process with the threads of both (the control)."""
    warmup = create_pipeline(fanout_spec("bench-scaling-warmup", SCALING_WIDTH, 0))
    wide = create_pipeline(fanout_spec("bench-scaling", SCALING_WIDTH, SLEEP_S))
    times = {}
    for label, count, args in SCALING_SETUPS:
        with workers(f"scaling{label}", count, args, log_dir):
            timed_run(warmup, SCALING_TIMEOUT_S)
            times[label] = repeat(lambda: timed_run(wide, SCALING_TIMEOUT_S)[0])
    return times


# --- report ---------------------------------------------------------------------------


def summarize(
    linear: dict[str, Any], fanout: list[float], scaling: dict[str, list[float]]
) -> dict[str, Any]:
    med = statistics.median
    checkpoint = linear["storage"]["checkpoint"]
    checkpoint_short = linear["storage_short"]["checkpoint"]
    return {
        "linear_ms_per_step": round(med(linear["linear_ms"]), 3),
        "linear_ms_per_step_best": round(min(linear["linear_ms"]), 3),
        "raw_celery_ms_per_step": round(med(linear["raw_ms"]), 3),
        "raw_celery_ms_per_step_best": round(min(linear["raw_ms"]), 3),
        "fanout_s": round(med(fanout), 3),
        "fanout_s_best": round(min(fanout), 3),
        "scaling_1_worker_s": round(med(scaling["1"]), 3),
        "scaling_2_workers_s": round(med(scaling["2"]), 3),
        "fanout_speedup_2_workers": round(med(scaling["1"]) / med(scaling["2"]), 3),
        # The control: one process with the thread slots of two.
        "scaling_1_worker_2x_threads_s": round(med(scaling["control"]), 3),
        "fanout_speedup_2x_threads": round(med(scaling["1"]) / med(scaling["control"]), 3),
        # What the second process adds beyond its thread slots (above 1: it helps).
        "fanout_speedup_2_workers_over_control": round(
            med(scaling["control"]) / med(scaling["2"]), 3
        ),
        "checkpoint_bytes_per_step": round(checkpoint, 1),
        f"checkpoint_bytes_per_step_{LINEAR_WARMUP_STEPS}_steps": round(checkpoint_short, 1),
        "checkpoint_linear_in_steps": abs(checkpoint / checkpoint_short - 1) < 0.1,
        "audit_bytes_per_step": round(linear["storage"]["auditentry"], 1),
        "steprun_bytes_per_step": round(linear["storage"]["steprun"], 1),
        "repeats": REPEATS,
        "broker": urlsplit(os.environ.get("CELERY_BROKER_URL", "")).scheme,
        **durability(),
    }


def targets_met(r: dict[str, Any]) -> bool:
    return bool(
        r["linear_ms_per_step"] <= LINEAR_TARGET_MS
        and r["fanout_s"] <= FANOUT_TARGET_S
        and r["fanout_speedup_2_workers"] >= SCALING_TARGET
        and r["checkpoint_linear_in_steps"]
    )


def print_table(
    r: dict[str, Any], linear: dict[str, Any], fanout: list[float], scaling: dict[str, list[float]]
) -> None:
    def runs(values: list[float], fmt: str) -> str:
        return " ".join(format(v, fmt) for v in values)

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    rows = [
        ("scenario", "figure (median)", "best", "target", "", "all runs"),
        (
            f"LINEAR {LINEAR_STEPS} noop",
            f"{r['linear_ms_per_step']:.2f} ms/step",
            f"{r['linear_ms_per_step_best']:.2f}",
            TARGETS["linear_ms_per_step"],
            verdict(r["linear_ms_per_step"] <= LINEAR_TARGET_MS),
            runs(linear["linear_ms"], ".2f"),
        ),
        (
            f"RAW celery chain {RAW_TASKS}",
            f"{r['raw_celery_ms_per_step']:.2f} ms/task",
            f"{r['raw_celery_ms_per_step_best']:.2f}",
            "(floor)",
            "",
            runs(linear["raw_ms"], ".2f"),
        ),
        (
            f"FANOUT {FANOUT_WIDTH} x {SLEEP_S:g}s",
            f"{r['fanout_s']:.3f} s",
            f"{r['fanout_s_best']:.3f}",
            TARGETS["fanout_s"],
            verdict(r["fanout_s"] <= FANOUT_TARGET_S),
            runs(fanout, ".3f"),
        ),
        (
            f"SCALING {SCALING_WIDTH} x {SLEEP_S:g}s, 1 worker",
            f"{r['scaling_1_worker_s']:.3f} s",
            f"{min(scaling['1']):.3f}",
            "",
            "",
            runs(scaling["1"], ".3f"),
        ),
        (
            f"SCALING {SCALING_WIDTH} x {SLEEP_S:g}s, 2 workers",
            f"{r['scaling_2_workers_s']:.3f} s",
            f"{min(scaling['2']):.3f}",
            "",
            "",
            runs(scaling["2"], ".3f"),
        ),
        (
            f"SCALING control: 1 worker, threads x {2 * SCALING_THREADS}",
            f"{r['scaling_1_worker_2x_threads_s']:.3f} s",
            f"{min(scaling['control']):.3f}",
            "",
            "",
            runs(scaling["control"], ".3f"),
        ),
        (
            "SCALING speedup t1/t2",
            f"{r['fanout_speedup_2_workers']:.2f}x",
            "",
            TARGETS["fanout_speedup_2_workers"],
            verdict(r["fanout_speedup_2_workers"] >= SCALING_TARGET),
            "",
        ),
        (
            "SCALING control t1/t(1 x 2 threads)",
            f"{r['fanout_speedup_2x_threads']:.2f}x",
            "",
            "(control)",
            "",
            "",
        ),
        (
            "2nd process beyond threads t(1 x 2 threads)/t2",
            f"{r['fanout_speedup_2_workers_over_control']:.2f}x",
            "",
            "(context)",
            "",
            "",
        ),
        (
            f"checkpoint bytes/step ({LINEAR_STEPS} steps)",
            f"{r['checkpoint_bytes_per_step']:.1f} B",
            "",
            TARGETS["checkpoint_bytes_per_step"],
            verdict(r["checkpoint_linear_in_steps"]),
            f"{LINEAR_WARMUP_STEPS} steps: "
            f"{r[f'checkpoint_bytes_per_step_{LINEAR_WARMUP_STEPS}_steps']:.1f} B",
        ),
        ("audit entry bytes/step", f"{r['audit_bytes_per_step']:.1f} B", "", "(context)", "", ""),
        ("step row bytes/step", f"{r['steprun_bytes_per_step']:.1f} B", "", "(context)", "", ""),
    ]
    print_columns(rows)


# --- main -----------------------------------------------------------------------------


def run_bench() -> int:
    """Set up, run the scenarios, print the table and the JSON line."""
    database_url = configure_env(DEFAULT_DATABASE_URL)
    broker_url = configure_broker(DEFAULT_BROKER_URL)
    setup(database_url, broker_url)
    purged = purge_broker()
    log_dir = Path(tempfile.mkdtemp(prefix="firefly-bench-"))
    print(f"purged {purged} queued message(s); worker logs in {log_dir}")
    linear = bench_linear_and_raw(log_dir)
    fanout = bench_fanout(log_dir)
    scaling = bench_scaling(log_dir)
    results = summarize(linear, fanout, scaling)
    print()
    print_table(results, linear, fanout, scaling)
    print(f"fsync={results['fsync']} synchronous_commit={results['synchronous_commit']}")
    results["targets_met"] = targets_met(results)
    print(json.dumps(results))
    return 0 if results["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main("bench/engine.py", run_bench))
