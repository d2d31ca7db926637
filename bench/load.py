"""Load test: reviewers on the pages and the API decide tasks while runs flow through gates.

    python bench/load.py [--seconds 60] [--reviewers 200] [--runs 500]

Reads DATABASE_URL and CELERY_BROKER_URL like the app (a local PostgreSQL database
`firefly_bench_load` and Redis db 13 when unset), migrates, and starts what `make serve`
starts: gunicorn (firefly_site/gunicorn_conf.py, DEBUG off, on a free 127.0.0.1 port),
two Celery worker processes of 32 threads and beat. All are stopped at the end, whatever
happens.

Each run of the pipeline is two noops, an approval for the bench's role, two noops. Half
the reviewers use the pages (a session; the inbox, a task page, the htmx approve POST with
the CSRF token the page carries), half the API (a token; the open tasks, a task, approve).
A few log in through the login form; the others get their session as that form makes it,
straight from Django's session store: each password check costs a second of CPU
(PBKDF2), which would load the cores for minutes. A reviewer picks one of the first
RACE_WINDOW tasks it is shown, so several race for the same task on purpose: the first
decision wins (200), the others get 409 naming the winner.

  IDLE  one page and one API reviewer, one request at a time, nothing else running: 3
        warm-up cycles (not counted), then IDLE_SAMPLES cycles
  LOAD  all the reviewers (thinking THINK_S between requests) for --seconds, while the
        bench starts --runs runs at an even pace over the first half of that time

Afterwards it waits for the approved runs to finish and checks, in the database, that
every decision answered 200 has its `task.approved` entry by that reviewer in the run's
audit chain (and the task was closed by them), that every 409 names the task's winner,
and that the chains of the decided runs verify. Errors are 5xx answers and requests
with no answer. Prints a table; the last line is one JSON object with the figures,
PostgreSQL's fsync and synchronous_commit and the load average. Exits 1 when a target
is missed: errors, lost decisions, unexpected answers or an approved run left unfinished,
or a request type whose p95 under load is over twice its idle p95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
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
    setup,
)
from bench.engine import WORKER_ARGS_MAKE_RUN, WORKERS_MAKE_RUN, purge_broker, workers  # noqa: E402
from bench.loadclient import Client, ConnectionFailed, Response  # noqa: E402
from bench.loadsetup import (  # noqa: E402
    ConnectionSampler,
    Seeded,
    Services,
    checks,
    cpu_seconds,
    cpu_used,
    drain,
    print_report,
    run_starter,
    seed,
    wait_tasks_open,
)
from bench.throughput import percentile  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/firefly_bench_load"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/13"

SECONDS = 60
REVIEWERS = 200
RUNS = 500
IDLE_WARMUP, IDLE_SAMPLES = 3, 20
# Seconds a person takes between two requests (reading the inbox, the task): one
# decision every half minute or so each, some 16 requests per second from 200 people.
THINK_S = (5.0, 20.0)
RACE_WINDOW = 5
TARGET_RATIO = 2.0

PAGE_TYPES = ("page_inbox", "page_task", "page_decide")
API_TYPES = ("api_list", "api_task", "api_decide")
TYPES = PAGE_TYPES + API_TYPES

TASK_LINK = re.compile(r'href="/tasks/(\d+)/"')
CSRF_HEADER = re.compile(r'"X-CSRFToken": "([^"]+)"')
WINNER = re.compile(r"already (?:decided|rejected|expired|cancelled) by ([\w.@+-]+)")


@dataclass
class Tally:
    """What the reviewers saw: timings by request type, answers, decisions."""

    times: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TYPES})
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    won: list[tuple[int, str]] = field(default_factory=list)  # (task, reviewer)
    conflicts: list[tuple[int, str, str | None]] = field(default_factory=list)  # + winner
    done_at: list[tuple[float, float]] = field(default_factory=list)  # (perf_counter, ms)

    def merged(self, other: Tally) -> Tally:
        both = Tally()
        for tally in (self, other):
            for kind, times in tally.times.items():
                both.times.setdefault(kind, []).extend(times)
            both.statuses.update(tally.statuses)
            both.errors += tally.errors
            both.unexpected += tally.unexpected
            both.won += tally.won
            both.conflicts += tally.conflicts
        return both

    def requests(self) -> int:
        return sum(self.statuses.values())

    def decision(self, task: int, user: str, response: Response) -> None:
        if response.status == 200:
            self.won.append((task, user))
        elif response.status == 409:
            text = response.text()
            found = WINNER.search(text)
            self.conflicts.append((task, user, found.group(1) if found else None))
            if not found:
                self.unexpected.append(f"409 for task {task} naming no winner: {text[:200]!r}")


async def timed(tally: Tally, kind: str, call: Any, expect: tuple[int, ...] = (200,)) -> Any:
    """The answer to one request, counted under `kind`; None when there was none or 5xx."""
    try:
        response: Response = await call
    except ConnectionFailed as exc:
        tally.errors.append(f"{kind}: {exc}")
        return None
    tally.statuses[(kind, response.status)] += 1
    tally.times.setdefault(kind, []).append(response.ms)
    tally.done_at.append((time.perf_counter(), response.ms))
    if response.status >= 500:
        tally.errors.append(f"{kind}: {response.status} {response.text()[:200]!r}")
        return None
    if response.status not in expect:
        tally.unexpected.append(f"{kind}: {response.status} {response.text()[:200]!r}")
        return None
    return response


@dataclass
class Reviewer:
    name: str
    client: Client
    rng: random.Random
    stop_at: float | None = None  # loop time; None: no thinking (idle)
    think_s: tuple[float, float] = THINK_S

    async def think(self) -> bool:
        """Pause like a person reading; False once the load's time is up."""
        if self.stop_at is None:
            return True
        loop = asyncio.get_running_loop()
        left = self.stop_at - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(left, self.rng.uniform(*self.think_s)))
        return loop.time() < self.stop_at

    def pick(self, ids: list[int]) -> int:
        unique = list(dict.fromkeys(ids))
        return unique[0] if self.stop_at is None else self.rng.choice(unique[:RACE_WINDOW])

    async def page_cycle(self, tally: Tally) -> None:
        inbox = await timed(tally, "page_inbox", self.client.get("/"))
        if inbox is None or not (ids := [int(i) for i in TASK_LINK.findall(inbox.text())]):
            await self.think()
            return
        task = self.pick(ids)
        if not await self.think():
            return
        page = await timed(tally, "page_task", self.client.get(f"/tasks/{task}/"))
        if page is None:
            return
        text = page.text()
        token = CSRF_HEADER.search(text)
        if f"/tasks/{task}/approve/" not in text:
            return  # decided since the inbox was read: the page offers nothing to do
        if token is None:
            tally.unexpected.append(f"page_task: no CSRF token on task {task}'s page")
            return
        if not await self.think():
            return
        headers = {"HX-Request": "true", "X-CSRFToken": token.group(1)}
        answer = await timed(
            tally,
            "page_decide",
            self.client.post_form(f"/tasks/{task}/approve/", {"comment": ""}, headers),
            expect=(200, 409),
        )
        if answer is not None:
            tally.decision(task, self.name, answer)
        await self.think()

    async def api_cycle(self, tally: Tally) -> None:
        listed = await timed(tally, "api_list", self.client.get(API_OPEN))
        ids = [t["id"] for t in listed.json()["results"]] if listed is not None else []
        if not ids:
            await self.think()
            return
        task = self.pick(ids)
        if not await self.think():
            return
        if await timed(tally, "api_task", self.client.get(f"/api/v1/tasks/{task}/")) is None:
            return
        if not await self.think():
            return
        answer = await timed(
            tally,
            "api_decide",
            self.client.post_json(f"/api/v1/tasks/{task}/approve/", {"comment": ""}),
            expect=(200, 409),
        )
        if answer is not None:
            tally.decision(task, self.name, answer)
        await self.think()


API_OPEN = "/api/v1/tasks/?status=open&mine=true"


def reviewers(
    seeded: Seeded, port: int, rng: random.Random
) -> tuple[list[Reviewer], list[Reviewer]]:
    pages, api = [], []
    for name, session in seeded.sessions.items():
        client = Client("127.0.0.1", port, cookies={seeded.session_cookie: session})
        pages.append(Reviewer(name, client, random.Random(rng.random())))
    for name, key in seeded.tokens.items():
        client = Client("127.0.0.1", port, headers={"Authorization": f"Token {key}"})
        api.append(Reviewer(name, client, random.Random(rng.random())))
    return pages, api


async def form_login(port: int, name: str, password: str, tally: Tally) -> str:
    """Log in through the login form; the session cookie it sets."""
    from django.conf import settings

    client = Client("127.0.0.1", port)
    try:
        form = await timed(tally, "login_form", client.get("/login/"))
        token = re.search(
            r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text() if form else ""
        )
        if token is None:
            raise BenchError(f"no login form with a CSRF token for {name}")
        fields = {"username": name, "password": password, "csrfmiddlewaretoken": token.group(1)}
        await timed(tally, "login_post", client.post_form("/login/", fields), expect=(302,))
        session = client.cookies.get(settings.SESSION_COOKIE_NAME)
        if session is None:
            seen = (tally.errors + tally.unexpected)[-1:]
            raise BenchError(f"the login form gave {name} no session: {seen}")
        return session
    finally:
        await client.close()


async def idle_phase(page: Reviewer, api: Reviewer) -> Tally:
    """One request at a time, nothing else running; the warm-up cycles are not counted."""
    tally, warmup = Tally(), Tally()
    for n in range(IDLE_WARMUP + IDLE_SAMPLES):
        into = warmup if n < IDLE_WARMUP else tally
        await page.page_cycle(into)
        await asyncio.sleep(0.2)  # the approved run's next steps, off the measured request
        await api.api_cycle(into)
        await asyncio.sleep(0.2)
    tally.errors += warmup.errors
    tally.unexpected += warmup.unexpected
    tally.won += warmup.won
    tally.conflicts += warmup.conflicts
    return tally


async def load_phase(pages: list[Reviewer], api: list[Reviewer], seconds: float) -> Tally:
    tally = Tally()
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds

    async def person(reviewer: Reviewer, cycle: Any) -> None:
        reviewer.stop_at = stop_at
        # Arrive spread over one thinking time, not all in the same millisecond.
        arrival = reviewer.rng.uniform(0, reviewer.think_s[1])
        await asyncio.sleep(min(arrival, max(0.0, stop_at - loop.time())))
        while loop.time() < stop_at:
            await cycle(tally)

    await asyncio.gather(
        *(person(r, r.page_cycle) for r in pages), *(person(r, r.api_cycle) for r in api)
    )
    return tally


def p95s(tally: Tally) -> dict[str, float]:
    return {t: round(percentile(v, 95), 1) for t, v in tally.times.items() if v}


async def measure(
    seeded: Seeded, port: int, roles: dict[str, list[int]], args: argparse.Namespace
) -> dict[str, Any]:
    rng = random.Random(20261201)
    think_s = (args.think_min, args.think_max)
    logins = Tally()
    for name in seeded.form_logins:
        seeded.sessions[name] = await form_login(port, name, seeded.password, logins)
    pages, api = reviewers(seeded, port, rng)
    for reviewer in pages + api:
        reviewer.think_s = think_s

    idle_load = os.getloadavg()
    idle = await idle_phase(pages[0], api[0])

    started_runs: list[int] = []
    start_ms: list[float] = []
    starter = threading.Thread(
        target=run_starter,
        args=(seeded.pipeline, args.runs, args.seconds / 2, started_runs, start_ms),
        daemon=True,  # an interrupted bench does not wait for the rest of the runs
    )
    sampler = ConnectionSampler()
    before_load = os.getloadavg()
    cpu_before = cpu_seconds(roles)
    began = time.perf_counter()
    starter.start()
    sampler.start()
    try:
        load = await load_phase(pages, api, args.seconds)
    finally:
        starter.join()
        sampler.done.set()
        sampler.join()
    elapsed = time.perf_counter() - began
    after_load = os.getloadavg()
    cpu_after = cpu_seconds(roles)
    cpu = cpu_used(cpu_before, cpu_after)
    for reviewer in pages + api:
        await reviewer.client.close()
        reviewer.stop_at = None

    # Idle again once the approved runs finished: the machine's other work changes over
    # minutes, so the idle figure is both sides of the load.
    await asyncio.to_thread(drain, [task for task, _ in idle.won + load.won])
    idle_after_load = os.getloadavg()
    idle_after = await idle_phase(pages[0], api[0])
    for reviewer in (pages[0], api[0]):
        await reviewer.client.close()
    return {
        "idle": idle.merged(idle_after),
        "idle_before": idle,
        "idle_after": idle_after,
        "load": load,
        "logins": logins,
        "elapsed": elapsed,
        "began": began,
        "cpu": cpu,
        "connections": sampler.peak,
        "think_s": think_s,
        "workers": f"{WORKERS_MAKE_RUN} x {args.worker_threads} threads",
        "reviewers": len(pages) + len(api),
        "runs": started_runs,
        "run_start_ms": start_ms,
        "loadavg": {
            "idle_before": idle_load,
            "load_start": before_load,
            "load_end": after_load,
            "idle_after": idle_after_load,
        },
    }


def run_bench(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/load.py", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="the load's length")
    parser.add_argument("--reviewers", type=int, default=REVIEWERS, help="half pages, half API")
    parser.add_argument("--runs", type=int, default=RUNS, help="runs started during the load")
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=int(WORKER_ARGS_MAKE_RUN[3]),
        help="threads per worker process (make run: 32); each may hold a database connection",
    )
    parser.add_argument("--think-min", type=float, default=THINK_S[0], help="seconds")
    parser.add_argument("--think-max", type=float, default=THINK_S[1], help="seconds")
    args = parser.parse_args(argv)
    if args.reviewers < 2 or args.runs < 1 or args.seconds <= 0:
        raise BenchError("--reviewers must be at least 2, --runs at least 1, --seconds > 0")
    if not 0 <= args.think_min <= args.think_max:
        raise BenchError("--think-min must be at least 0 and at most --think-max")
    worker_args = [*WORKER_ARGS_MAKE_RUN]
    worker_args[3] = str(args.worker_threads)
    database_url = configure_env(DEFAULT_DATABASE_URL)
    broker_url = configure_broker(DEFAULT_BROKER_URL)
    setup(database_url, broker_url)
    purge_broker()
    at_start = os.getloadavg()
    # The idle cycles decide 2 tasks each; a full inbox page (50) stays for the last one,
    # so the idle pages list as many tasks as the loaded ones.
    seeded = seed(args.reviewers, warm_tasks=2 * (IDLE_WARMUP + IDLE_SAMPLES) + 50)
    with (
        tempfile.TemporaryDirectory(prefix="firefly-load-") as tmp,
        workers("load", WORKERS_MAKE_RUN, worker_args, Path(tmp)) as group,
        Services(Path(tmp)) as services,
    ):
        wait_tasks_open(seeded.warm_runs)
        roles = {
            "web": [services.procs["web"].pid],
            "workers": [proc.pid for proc in group.procs],
            "beat": [services.procs["beat"].pid],
            "client": [os.getpid()],
        }
        result = asyncio.run(measure(seeded, services.port, roles, args))
        verdict = checks(result, seeded)
        services.check_alive()
        for line in services.web_errors():
            print(f"  web.log: {line}", file=sys.stderr)
    figures = figures_of(result, verdict, at_start)
    print_report(figures, TYPES)
    print(json.dumps(figures))
    return 0 if figures["targets_met"] else 1


def figures_of(result: dict[str, Any], verdict: dict[str, Any], at_start: Any) -> dict[str, Any]:
    idle, load = result["idle"], result["load"]

    def half(at: float) -> int:
        return 0 if at - result["began"] < result["elapsed"] / 2 else 1

    idle_p95, load_p95 = p95s(idle), p95s(load)
    ratios = {
        t: round(load_p95[t] / idle_p95[t], 2) for t in TYPES if t in idle_p95 and t in load_p95
    }
    slow = sorted(t for t, r in ratios.items() if r > TARGET_RATIO)
    missing = sorted(t for t in TYPES if t not in ratios)
    errors = len(idle.errors) + len(load.errors) + len(result["logins"].errors)
    unexpected = len(idle.unexpected) + len(load.unexpected) + len(result["logins"].unexpected)
    for line in (idle.errors + load.errors + idle.unexpected + load.unexpected)[:10]:
        print(f"  {line}", file=sys.stderr)
    figures: dict[str, Any] = {
        "seconds": round(result["elapsed"], 1),
        "requests": load.requests(),
        "requests_per_s": round(load.requests() / result["elapsed"], 1),
        "p95_idle_ms": idle_p95,
        "p95_idle_before_ms": p95s(result["idle_before"]),
        "p95_idle_after_ms": p95s(result["idle_after"]),
        "p95_load_ms": load_p95,
        "p95_ratio": ratios,
        # Every request type together, by half of the load: the runs start in the first.
        "p95_load_halves_ms": [
            round(percentile([ms for at, ms in load.done_at if half(at) == h], 95), 1)
            for h in (0, 1)
        ],
        "p50_load_ms": {t: round(percentile(v, 50), 1) for t, v in load.times.items() if v},
        "errors": errors,
        "unexpected": unexpected,
        "decisions_200": len(idle.won) + len(load.won),
        "decisions_409": len(idle.conflicts) + len(load.conflicts),
        **verdict,
        "runs_started": len(result["runs"]),
        "run_start_p95_ms": round(percentile(result["run_start_ms"], 95), 1),
        "cpu_s_during_load": result["cpu"],
        "pg_connections_peak": result["connections"],
        "think_s": list(result["think_s"]),
        "workers": result["workers"],
        "reviewers": result["reviewers"],
        "login_form_ms": [round(t, 1) for t in result["logins"].times.get("login_post", [])],
        **durability(),
        "loadavg": {
            "start": [round(x, 2) for x in at_start],
            **{k: [round(x, 2) for x in v] for k, v in result["loadavg"].items()},
            "end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    figures["slow_types"] = slow
    figures["targets_met"] = (
        errors == 0
        and unexpected == 0
        and figures["lost"] == 0
        and figures["approved_unfinished"] == 0
        and figures["chains_broken"] == 0
        and not slow
        and not missing
    )
    return figures


if __name__ == "__main__":
    sys.exit(main("bench/load.py", lambda: run_bench(sys.argv[1:])))
