"""/healthz (the process answers) and /readyz (what it depends on answers), for probes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from firefly_site.celery import app
from pipelines.models import Heartbeat

log = logging.getLogger(__name__)

# A probe every second from each of several load balancers costs one round of checks per
# this many seconds per web process.
CACHE_S = 2.0
# Seconds to wait for the broker to accept a connection, and for the first worker's reply.
BROKER_TIMEOUT_S = 2
PING_TIMEOUT_S = 1.0
# Beat sends the reaper every FIREFLY_REAPER_INTERVAL_S; this many intervals without it
# and beat counts as gone (one late or lost message is not enough).
BEAT_MISSED_INTERVALS = 3


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, Check]
    checked_at: datetime

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check.ok]

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "failing" if self.failing else "ok",
            "failing": self.failing,
            "checks": {n: {"ok": c.ok, "detail": c.detail} for n, c in self.checks.items()},
            "checked_at": self.checked_at.isoformat(),
        }


# --- the checks ---------------------------------------------------------------------------
# Details name what failed, never the exception's text: /readyz is public, and a driver's
# message carries host names and addresses. The log has the rest.

_expected_migrations: set[tuple[str, str]] | None = None


def _leaf_migrations() -> set[tuple[str, str]]:
    """The last migration of each app, as this code ships them (read from disk once)."""
    global _expected_migrations
    if _expected_migrations is None:
        graph = MigrationLoader(None, ignore_no_migrations=True).graph
        _expected_migrations = set(graph.leaf_nodes())
    return _expected_migrations


def check_database() -> Check:
    try:
        applied = set(MigrationRecorder(connection).applied_migrations())
    except DatabaseError as exc:
        log.warning("readyz: database unreachable: %s", exc)
        return Check(False, f"unreachable ({type(exc).__name__})")
    missing = sorted(f"{app}.{name}" for app, name in _leaf_migrations() - applied)
    if missing:
        return Check(False, f"not migrated: {', '.join(missing)} not applied")
    return Check(True, "reachable and migrated")


def check_broker_and_workers() -> tuple[Check, Check]:
    """One connection for both: the broker accepts it, then a worker answers a ping."""
    try:
        with app.connection_for_write(
            url=settings.CELERY_BROKER_URL, connect_timeout=BROKER_TIMEOUT_S
        ) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
            broker = Check(True, "reachable")
            # limit=1: the first reply is enough, so a healthy cluster answers in
            # milliseconds and only a silent one costs the whole timeout.
            replies = app.control.ping(timeout=PING_TIMEOUT_S, limit=1, connection=conn)
    except Exception as exc:  # any transport's error, whatever its class: "unreachable"
        log.warning("readyz: broker unreachable: %s", exc)
        return (
            Check(False, f"unreachable ({type(exc).__name__})"),
            Check(False, "not checked: the broker is unreachable"),
        )
    if not replies:
        return broker, Check(False, f"no worker answered a ping within {PING_TIMEOUT_S:g} s")
    return broker, Check(True, f"{', '.join(sorted(n for r in replies for n in r))} answered")


def check_beat(database: Check) -> Check:
    if not database.ok:
        return Check(False, "not checked: the database is not ready")
    try:
        seen = Heartbeat.objects.filter(name=Heartbeat.REAPER).values_list("seen_at", flat=True)
        seen_at = seen.first()
    except DatabaseError as exc:
        log.warning("readyz: heartbeat unreadable: %s", exc)
        return Check(False, f"heartbeat unreadable ({type(exc).__name__})")
    interval = settings.FIREFLY_REAPER_INTERVAL_S
    if seen_at is None:
        return Check(False, "the reaper, which beat sends, has never run")
    age = (timezone.now() - seen_at).total_seconds()
    if age > BEAT_MISSED_INTERVALS * interval:
        return Check(
            False,
            f"the reaper last ran {age:.0f} s ago; beat sends it every {interval:g} s",
        )
    return Check(True, f"the reaper ran {age:.0f} s ago")


def readiness() -> Readiness:
    database = check_database()
    broker, workers = check_broker_and_workers()
    checks = {
        "database": database,
        "broker": broker,
        "workers": workers,
        "beat": check_beat(database),
    }
    return Readiness(checks=checks, checked_at=timezone.now())


# --- cached for CACHE_S -------------------------------------------------------------------

_lock = threading.Lock()
_cached: tuple[float, Readiness] | None = None


def cached_readiness() -> Readiness:
    """The last result if younger than CACHE_S; else one thread checks while the others
    wait for its answer (a burst of probes makes one round of checks, not one each)."""
    global _cached
    with _lock:
        if _cached is None or time.monotonic() - _cached[0] > CACHE_S:
            _cached = (time.monotonic(), readiness())
        return _cached[1]


def forget() -> None:
    """Drop the cached result (tests change the world between two probes)."""
    global _cached
    with _lock:
        _cached = None


# --- views and the middleware that serves them ----------------------------------------------


def _answer(request: HttpRequest, body: dict[str, Any], status: int) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response: HttpResponse = JsonResponse({"error": "GET or HEAD only"}, status=405)
        response["Allow"] = "GET, HEAD"
    else:
        response = JsonResponse(body, status=status)
    # A cache between the probe and Firefly would answer for a process it cannot see.
    response["Cache-Control"] = "no-store"
    # Not one error line per probe while something is down: the checks log their causes.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers: nothing else is touched (no database, no broker)."""
    return _answer(request, {"status": "ok"}, 200)


def readyz(request: HttpRequest) -> HttpResponse:
    """Database reachable and migrated, broker reachable, a worker answering, beat alive;
    503 naming the failing checks otherwise."""
    if request.method not in ("GET", "HEAD"):
        return _answer(request, {}, 405)
    result = cached_readiness()
    return _answer(request, result.as_json(), 503 if result.failing else 200)


PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
}


class HealthCheckMiddleware:
    """Answers the probes before every other middleware: no session or user is loaded (so
    /healthz touches no database), and neither ALLOWED_HOSTS nor the HTTPS redirect stands
    in the way of a load balancer that probes a process by its address over plain HTTP.

    Safe without the host check: the answers are the same whatever the Host header says
    and build no URL from it. First in MIDDLEWARE; the URL conf names the same views.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return self.get_response(request)
