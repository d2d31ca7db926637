"""/healthz and /readyz: each readiness check made to fail for real, against production
processes (gunicorn, a Celery worker and beat, a private Redis) on the test database."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection

from firefly_site import health
from tests.production import (
    celery,
    free_port,
    gunicorn,
    process,
    production_env,
    redis_server,
    stop,
    wait_http,
    wait_port,
)

CHECKS = {"database", "broker", "workers", "beat"}


@contextmanager
def web(tmp_path: Path, **env: str) -> Iterator[str]:
    """`make serve`'s web process with production settings; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / f"web-{port}.log"
    extra = {"WEB_CONCURRENCY": "1", "WEB_THREADS": "2", **env}
    with process(gunicorn(port), production_env(tmp_path / "var", **extra), log) as child:
        wait_http(f"{base}/healthz", child, log)
        yield base


def ready(base: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{base}/readyz", timeout=10)
    body = response.json()
    assert set(body["checks"]) == CHECKS, body
    assert body["failing"] == [n for n, c in body["checks"].items() if not c["ok"]], body
    assert body["status"] == ("failing" if body["failing"] else "ok"), body
    return response.status_code, body


def wait_ready(base: str, until: Callable[[int, dict[str, Any]], bool], timeout: float = 60):
    deadline = time.monotonic() + timeout
    status, body = ready(base)
    while not until(status, body):
        assert time.monotonic() < deadline, f"readyz still says {status} {body}"
        time.sleep(0.5)
        status, body = ready(base)
    return status, body


def failing(names: set[str]) -> Callable[[int, dict[str, Any]], bool]:
    return lambda status, body: set(body["failing"]) == names


# --- in process -------------------------------------------------------------------------


def test_healthz_answers_without_touching_the_database(client):
    # No `db` fixture: any query (a session, a user, the organization) would raise here.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_probes_take_get_and_head_only(db, client):
    for url in ("/healthz", "/readyz"):
        for method in ("post", "put", "delete"):
            response = getattr(client, method)(url)
            assert response.status_code == 405, (method, url)
            assert response["Allow"] == "GET, HEAD"
        assert client.head(url).status_code in (200, 503)


def test_readyz_checks_at_most_once_per_cache_period(db, client):
    health.forget()
    first = client.get("/readyz").json()
    again = client.get("/readyz").json()
    assert again["checked_at"] == first["checked_at"]
    time.sleep(health.CACHE_S + 0.1)
    assert client.get("/readyz").json()["checked_at"] != first["checked_at"]


# --- production processes ---------------------------------------------------------------


def test_an_unreachable_database_fails_readyz_not_healthz(tmp_path):
    closed = free_port()
    with web(
        tmp_path,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed}/firefly",
        # As a deployment: HTTPS only, one host name. A probe by address over plain HTTP
        # still gets its answer (no redirect, no 400), and nothing else does.
        FIREFLY_PLAIN_HTTP="false",
        ALLOWED_HOSTS="firefly.example.com",
    ) as base:
        probe = {"Host": "10.1.2.3:8000"}
        healthz = requests.get(f"{base}/healthz", headers=probe, timeout=10)
        assert healthz.status_code == 200
        assert healthz.json() == {"status": "ok"}
        response = requests.get(f"{base}/readyz", headers=probe, timeout=10)
        assert response.status_code == 503
        body = response.json()
        assert body["failing"][0] == "database"
        assert body["checks"]["database"]["detail"].startswith("unreachable")
        assert body["checks"]["beat"] == {
            "ok": False,
            "detail": "not checked: the database is not ready",
        }
        # The driver's message names the server: the log has it, the public answer not.
        assert str(closed) not in response.text
        login = requests.get(f"{base}/login/", headers=probe, timeout=10, allow_redirects=False)
        assert login.status_code == 400


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database with no tables at all (nothing migrated); dropped afterwards."""
    name = f"firefly_unmigrated_{uuid.uuid4().hex[:8]}"
    db = settings.DATABASES["default"]
    admin = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_an_unmigrated_database_fails_readyz(tmp_path, empty_database):
    with web(tmp_path, DATABASE_URL=empty_database) as base:
        status, body = ready(base)
    assert status == 503
    assert "database" in body["failing"]
    detail = body["checks"]["database"]["detail"]
    assert detail.startswith("not migrated:"), detail
    assert "pipelines.0" in detail


def test_one_migration_short_fails_readyz(transactional_db, tmp_path):
    """The database answers but the last migration of an app is not recorded as applied."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM django_migrations WHERE app = 'pipelines' ORDER BY name DESC"
        )
        last = cursor.fetchone()[0]
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'pipelines' AND name = %s", [last]
        )
    try:
        with web(tmp_path) as base:
            status, body = ready(base)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, now())",
                ["pipelines", last],
            )
    assert status == 503
    assert body["checks"]["database"] == {
        "ok": False,
        "detail": f"not migrated: pipelines.{last} not applied",
    }


def test_each_check_fails_when_its_process_stops(transactional_db, tmp_path):
    """All ready with a worker and beat on a private Redis; then beat stops, the worker
    stops, Redis stops, and each time exactly the one more check fails."""
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    # Beat sends the reaper every second: beat counts as gone after three seconds.
    env = production_env(tmp_path / "var", CELERY_BROKER_URL=broker, FIREFLY_REAPER_INTERVAL_S="1")
    with process(redis_server(port), env, tmp_path / "redis.log") as redis:
        wait_port(port)
        with web(tmp_path, CELERY_BROKER_URL=broker, FIREFLY_REAPER_INTERVAL_S="1") as base:
            status, body = ready(base)
            assert status == 503
            assert set(body["failing"]) == {"workers", "beat"}
            assert body["checks"]["beat"]["detail"] == "the reaper, which beat sends, has never run"
            worker_args = ["worker", "-P", "threads", "-c", "2", "-n", f"health-{port}@%h"]
            with (
                process(celery(*worker_args), env, tmp_path / "worker.log") as worker,
                process(celery("beat", "-l", "INFO"), env, tmp_path / "beat.log") as beat,
            ):
                status, body = wait_ready(base, lambda status, _: status == 200)
                node = f"health-{port}@{socket.gethostname()}"
                assert body["checks"]["workers"]["detail"] == f"{node} answered"

                stop(beat)
                status, body = wait_ready(base, failing({"beat"}))
                assert status == 503
                assert "beat sends it every 1 s" in body["checks"]["beat"]["detail"]

                stop(worker)
                wait_ready(base, failing({"beat", "workers"}))

            stop(redis)
            status, body = wait_ready(base, failing({"beat", "workers", "broker"}))
            assert status == 503
            assert body["checks"]["broker"]["detail"].startswith("unreachable")
            assert body["checks"]["workers"]["detail"] == "not checked: the broker is unreachable"
            assert body["checks"]["database"]["ok"]
