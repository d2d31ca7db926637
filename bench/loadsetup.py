"""bench/load.py's people, pipeline and server processes, its run starter and its checks."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchError, print_columns
from bench.engine import CELERY

PREFIX = "load"
FORM_LOGINS = 4  # page reviewers who log in through the form; the others get a session
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
TASKS_TIMEOUT_S = 120
DRAIN_S = 90  # for the approved runs to finish after the load
STARTER_THREADS = 4
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"


@dataclass
class Seeded:
    pipeline: str
    password: str
    session_cookie: str
    sessions: dict[str, str]  # page reviewer: session key ("" until the form login)
    form_logins: list[str]
    tokens: dict[str, str]  # API reviewer: token key
    warm_runs: list[int] = field(default_factory=list)


def gate_spec(name: str, role: str) -> dict[str, Any]:
    def noop(step: str, after: str | None) -> dict[str, Any]:
        return {"name": step, "type": "noop", **({"after": [after]} if after else {})}

    return {
        "name": name,
        "description": "bench/load.py: two noops, an approval, two noops",
        "steps": [
            noop("fetch", None),
            noop("extract", "fetch"),
            {
                "name": "review",
                "type": "approval",
                "after": ["extract"],
                "config": {"assignee_role": role, "instructions": "Approve to publish."},
            },
            noop("publish", "review"),
            noop("notify", "publish"),
        ],
    }


def seed(reviewers: int, warm_tasks: int) -> Seeded:
    """The reviewers (a new role for this run, so tasks of earlier runs stay out of their
    inboxes), their sessions and tokens, the pipeline, and the idle phase's open tasks."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group

    from orgs.models import Membership, Organization
    from pipelines import services
    from tokens.services import token_create

    stamp = int(time.time())
    role = Group.objects.create(name=f"{PREFIX}-reviewers-{stamp}")
    organization = Organization.objects.default()
    password = secrets.token_urlsafe(16)
    hashed = make_password(password)  # once: a second of CPU each
    store = import_module(settings.SESSION_ENGINE).SessionStore
    sessions: dict[str, str] = {}
    tokens: dict[str, str] = {}
    form_logins: list[str] = []
    for i in range(reviewers):
        user, _ = get_user_model().objects.update_or_create(
            username=f"{PREFIX}-reviewer-{i:03d}",
            defaults={"password": hashed, "is_active": True, "is_staff": False},
        )
        user.groups.set([role])
        Membership.objects.get_or_create(
            user=user, organization=organization, defaults={"role": "member"}
        )
        name = user.get_username()
        if i % 2:
            _, tokens[name] = token_create(
                user=user,
                name=f"{PREFIX}-{stamp}",
                organization=organization.pk,
                expires_in=timedelta(hours=1),
            )
        elif len(form_logins) < FORM_LOGINS and i > 0:
            form_logins.append(name)
            sessions[name] = ""
        else:
            # What a successful login leaves in the session (django.contrib.auth.login).
            session = store()
            session[SESSION_KEY] = str(user.pk)
            session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.create()
            sessions[name] = str(session.session_key)
    pipeline = f"{PREFIX}-gate-{stamp}"
    services.pipeline_create(spec=gate_spec(pipeline, role.name))
    warm = [services.run_start(pipeline=pipeline, inputs={}).pk for _ in range(warm_tasks)]
    return Seeded(
        pipeline=pipeline,
        password=password,
        session_cookie=settings.SESSION_COOKIE_NAME,
        sessions=sessions,
        form_logins=form_logins,
        tokens=tokens,
        warm_runs=warm,
    )


def wait_tasks_open(run_ids: list[int]) -> None:
    from approvals.models import HumanTask

    deadline = time.monotonic() + TASKS_TIMEOUT_S
    while HumanTask.objects.filter(run_id__in=run_ids, status="open").count() < len(run_ids):
        if time.monotonic() > deadline:
            raise BenchError(f"the warm-up runs' tasks not open after {TASKS_TIMEOUT_S}s")
        time.sleep(0.5)


def run_starter(
    pipeline: str, count: int, window_s: float, ids: list[int], ms: list[float]
) -> None:
    """Start `count` runs at an even pace over `window_s`, from a few threads, as an
    upstream system would; their ids and `run_start` times go into `ids` and `ms`."""
    from django.db import connection

    from pipelines import services

    began = time.monotonic()
    lock = threading.Lock()
    failures: list[BaseException] = []

    def starter(first: int) -> None:
        try:
            for n in range(first, count, STARTER_THREADS):
                time.sleep(max(0.0, began + n * window_s / count - time.monotonic()))
                t0 = time.perf_counter()
                run = services.run_start(pipeline=pipeline, inputs={})
                with lock:
                    ms.append((time.perf_counter() - t0) * 1000)
                    ids.append(run.pk)
        except BaseException as exc:  # reported by the checks: fewer runs than asked
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=starter, args=(k,)) for k in range(STARTER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        print(f"run_start failed: {failures[0]!r}")


# --- server processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Services:
    """gunicorn as `make serve` runs it and Celery beat, each in its own process group."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with (self.tmp / f"{name}.log").open("wb") as out:
            self.procs[name] = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def __enter__(self) -> Services:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        web_env = {
            **env,
            "WEB_BIND": f"127.0.0.1:{self.port}",
            "PROMETHEUS_MULTIPROC_DIR": str(self.tmp / "prometheus"),
        }
        try:
            conf = str(ROOT / "firefly_site" / "gunicorn_conf.py")
            self._start("web", [str(GUNICORN), "-c", conf, "firefly_site.wsgi"], web_env)
            schedule = str(self.tmp / "beat-schedule")
            beat = [str(CELERY), "-A", "firefly_site", "beat", "-l", "warning", "-s", schedule]
            self._start("beat", beat, env)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise BenchError(f"gunicorn not ready after {READY_TIMEOUT_S}s") from None
                time.sleep(0.3)

    def web_errors(self, lines: int = 5) -> list[str]:
        """The web log's last error lines (a 500's cause: the database refusing, ...)."""
        log = (self.tmp / "web.log").read_text(errors="replace").splitlines()
        return [line for line in log if "Error" in line or "FATAL" in line][-lines:]

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
                raise BenchError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM each group (gunicorn and beat shut down gracefully), SIGKILL what is left."""
        for proc in self.procs.values():
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# --- checks -------------------------------------------------------------------------------


def drain(task_ids: list[int]) -> None:
    """Wait (at most DRAIN_S) for the runs of these tasks to finish."""
    from django.db import connection

    from approvals.models import HumanTask
    from pipelines.models import Run

    runs = HumanTask.objects.filter(pk__in=task_ids).values("run_id")
    deadline = time.monotonic() + DRAIN_S
    try:
        while Run.objects.filter(pk__in=runs).exclude(status__in=Run.FINISHED).exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)
    finally:
        connection.close()


def checks(result: dict[str, Any], seeded: Seeded) -> dict[str, Any]:
    """Nothing lost, from the database: every 200 has its audit entry by its reviewer and
    closed the task; every 409 names the reviewer the database says won; the chains of
    the decided runs verify; every approved run finished."""
    from approvals.models import HumanTask
    from pipelines.audit import verify
    from pipelines.models import AuditEntry, Run

    won = result["idle"].won + result["load"].won
    conflicts = result["idle"].conflicts + result["load"].conflicts
    task_ids = {t for t, _ in won} | {t for t, _, _ in conflicts}
    tasks = {
        t.pk: t for t in HumanTask.objects.filter(pk__in=task_ids).select_related("decided_by")
    }
    decided_runs = sorted({tasks[t].run_id for t, _ in won})
    drain([t for t, _ in won])
    approvals = Counter(
        ((entry["data"] or {}).get("task"), entry["actor_name"])
        for entry in AuditEntry.objects.filter(
            run_id__in=[t.run_id for t in tasks.values()], event="task.approved"
        ).values("data", "actor_name")
    )
    per_task = Counter(task for task, _ in approvals.elements())
    winner = {pk: t.decided_by.get_username() if t.decided_by else None for pk, t in tasks.items()}
    lost: list[str] = []
    for task, user in won:
        if approvals[(task, user)] != 1 or winner[task] != user:
            lost.append(
                f"task {task}: 200 to {user}, audit {approvals[(task, user)]}, "
                f"closed by {winner[task]}"
            )
    won_set = set(won)
    for task, user, named in conflicts:
        if named is None or named != winner[task] or (task, named) not in won_set:
            lost.append(f"task {task}: 409 to {user} named {named}, closed by {winner[task]}")
    broken = [run for run in decided_runs if verify(run_id=run)[1] is not None]
    load_runs = result["runs"]
    finished = Run.objects.filter(pk__in=load_runs, status=Run.Status.SUCCEEDED).count()
    unfinished = Run.objects.filter(pk__in=decided_runs).exclude(status=Run.Status.SUCCEEDED)
    for line in lost[:10]:
        print(f"  LOST {line}")
    return {
        "lost": len(lost),
        "double_approvals": sum(1 for n in per_task.values() if n > 1),
        "tasks_decided": len(decided_runs),
        "chains_broken": len(broken),
        "runs_finished": finished,
        "approved_unfinished": unfinished.count(),
        "runs_waiting_at_gate": HumanTask.objects.filter(
            run_id__in=load_runs, status="open"
        ).count(),
    }


def print_report(figures: dict[str, Any], types: tuple[str, ...]) -> None:
    rows = [
        ["request", "idle p95 ms", "(before", "after)", "load p50 ms", "load p95 ms", "ratio", ""]
    ]
    idle, load = figures["p95_idle_ms"], figures["p95_load_ms"]
    before, after = figures["p95_idle_before_ms"], figures["p95_idle_after_ms"]
    for kind in types:
        ratio = figures["p95_ratio"].get(kind)
        verdict = "" if ratio is None else ("met" if ratio <= 2.0 else "MISSED")
        rows.append(
            [
                kind,
                str(idle.get(kind, "-")),
                str(before.get(kind, "-")),
                str(after.get(kind, "-")),
                str(figures["p50_load_ms"].get(kind, "-")),
                str(load.get(kind, "-")),
                "-" if ratio is None else f"{ratio}x",
                verdict,
            ]
        )
    print_columns(rows, right={1, 2, 3, 4, 5, 6})
    for key in (
        "seconds",
        "requests",
        "requests_per_s",
        "p95_load_halves_ms",
        "errors",
        "unexpected",
        "decisions_200",
        "decisions_409",
        "lost",
        "double_approvals",
        "chains_broken",
        "runs_started",
        "runs_finished",
        "runs_waiting_at_gate",
        "approved_unfinished",
        "run_start_p95_ms",
        "login_form_ms",
        "cpu_s_during_load",
        "pg_connections_peak",
        "think_s",
        "reviewers",
        "fsync",
        "synchronous_commit",
        "loadavg",
    ):
        print(f"{key}: {figures[key]}")


# --- where the CPU went -------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of a process; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def cpu_seconds(roles: dict[str, list[int]]) -> dict[Any, float]:
    """CPU seconds used so far: by each process of a role or a role's child, and by each
    PostgreSQL process (every backend, whoever it serves), keyed (role, pid); and by the
    whole machine, keyed "machine"."""
    role_of = {pid: role for role, pids in roles.items() for pid in pids}
    totals: dict[Any, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (found := _stat(int(entry.name))) is None:
            continue
        pid, (ppid, seconds) = int(entry.name), found
        role = role_of.get(pid) or role_of.get(ppid)
        if role is None:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                    continue
            except OSError:
                continue
            role = "postgres"
        totals[(role, pid)] = seconds
    # Busy time of every CPU (user, nice, system, irq, softirq, steal): the machine's,
    # others' work included.
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    totals["machine"] = sum(int(cpu[i]) for i in (0, 1, 2, 5, 6, 7)) / TICKS
    return totals


def cpu_used(before: dict[Any, float], after: dict[Any, float]) -> dict[str, float]:
    """CPU seconds by role between two `cpu_seconds`: a process that ended in between is
    left out (its time is unknown), one that started counts whole."""
    used: dict[str, float] = {}
    for key, seconds in after.items():
        role = key if key == "machine" else key[0]
        used[role] = used.get(role, 0.0) + seconds - before.get(key, 0.0)
    return {role: round(seconds, 1) for role, seconds in used.items()}


class ConnectionSampler(threading.Thread):
    """The most PostgreSQL connections seen, this database's and all, twice a second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.done = threading.Event()
        self.peak = {"ours": 0, "all": 0, "max_connections": 0}

    def run(self) -> None:
        from django.db import connection

        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW max_connections")
                self.peak["max_connections"] = int(cursor.fetchone()[0])
                while not self.done.wait(0.5):
                    cursor.execute(
                        "SELECT count(*) FILTER (WHERE datname = current_database()), count(*)"
                        " FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    )
                    ours, every = cursor.fetchone()
                    self.peak["ours"] = max(self.peak["ours"], ours)
                    self.peak["all"] = max(self.peak["all"], every)
        finally:
            connection.close()
