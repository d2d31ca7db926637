"""Set-up, timing and output shared by the benchmark scripts in bench/.

The scripts put the repository root on sys.path, then import this module as
`bench.common` (as they import each other), so the Django project imports too.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A run failed or timed out, or the set-up did not work."""


# --- set-up ---------------------------------------------------------------------------


def configure_env(default_database_url: str) -> str:
    """Resolve the database URL and set Django's defaults; refuse anything but PostgreSQL."""
    database_url = os.environ.setdefault("DATABASE_URL", default_database_url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "firefly_site.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Measure what production runs: DEBUG off (Django would otherwise record every query).
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "firefly-bench-secret-key-for-benchmarks-only")
    os.environ.setdefault("FIREFLY_AUDIT_KEY", "firefly-bench-audit-key-for-benchmarks-only")
    os.environ.setdefault("FIREFLY_SECRETS_KEY", "firefly-bench-secrets-key-for-benchmarks-only")
    # Django's test client speaks plain HTTP: no HTTPS redirect, no secure-only cookies.
    os.environ.setdefault("FIREFLY_PLAIN_HTTP", "true")
    if urlsplit(database_url).scheme not in ("postgres", "postgresql", "pgsql", "psql"):
        raise BenchError(f"DATABASE_URL must be a PostgreSQL URL, not {database_url!r}.")
    return database_url


BROKER_SCHEMES = ("redis", "rediss", "amqp", "pyamqp", "amqps")
# Where a bench's raw tasks record when they finished: the broker when it is Redis, else
# this Redis (with RabbitMQ as the broker).
SIGNAL_REDIS_URL = "redis://127.0.0.1:6379/14"


def configure_broker(default_broker_url: str) -> str:
    """Resolve the Celery broker URL; refuse anything but Redis or RabbitMQ."""
    broker_url = os.environ.setdefault("CELERY_BROKER_URL", default_broker_url)
    if urlsplit(broker_url).scheme not in BROKER_SCHEMES:
        raise BenchError(
            f"CELERY_BROKER_URL must be a Redis or RabbitMQ (amqp) URL, not {broker_url!r}."
        )
    return broker_url


def signal_redis_url(broker_url: str) -> str:
    return broker_url if urlsplit(broker_url).scheme in ("redis", "rediss") else SIGNAL_REDIS_URL


def ensure_database(database_url: str) -> None:
    """CREATE DATABASE when it does not exist yet (connecting to the `postgres` db)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name:
        raise BenchError(f"DATABASE_URL names no database: {database_url!r}.")
    maintenance = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                print(f"created database {name}")
    except psycopg.Error as exc:
        raise BenchError(f"cannot reach PostgreSQL at {maintenance}: {exc}") from exc


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `manage.py` with this environment; its output is captured."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def migrate() -> None:
    """Migrate the database; warn when the models have changes without a migration."""
    result = manage("migrate", "--noinput", "-v", "0")
    if result.returncode != 0:
        raise BenchError(f"manage.py migrate failed:\n{result.stdout}{result.stderr}")
    check = manage("makemigrations", "--check", "--dry-run")
    if check.returncode != 0:
        print(
            "warning: the models have changes without a migration; runs may fail:\n"
            + check.stdout.strip(),
            file=sys.stderr,
        )


def setup(database_url: str, broker_url: str = "") -> None:
    """Create the database if missing, migrate it, set Django up; print what is used."""
    ensure_database(database_url)
    migrate()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    # Pages render with DEBUG off as in production, which serves the hashed static files
    # collectstatic writes (WhiteNoise's manifest).
    call_command("collectstatic", interactive=False, verbosity=0)

    broker = f"  broker {broker_url}" if broker_url else ""
    print(f"database {database_url}{broker}  DEBUG={settings.DEBUG}")


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn a database error into a BenchError; close Django's connection at the end."""
    from django.db import DatabaseError, connection

    try:
        yield
    except DatabaseError as exc:
        raise BenchError(f"database error: {exc}") from exc
    finally:
        connection.close()


# --- timing ---------------------------------------------------------------------------


def time_ms(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """Time `repeats` calls: p50, p95 (nearest rank) and max in ms, rounded to 0.1 ms."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(len(times) * 0.95 + 0.5) - 1)], 1),
        "max_ms": round(times[-1], 1),
    }


# --- output ---------------------------------------------------------------------------


def print_columns(rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> None:
    """Print rows in fixed-width columns two spaces apart, a rule under the first row.

    Cells are left-aligned, except in the columns whose index is in `right`; trailing
    spaces are dropped.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))


# --- main -----------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    """A SIGTERM unwinds like Ctrl-C, so workers are stopped and connections closed."""
    raise KeyboardInterrupt


def main(script: str, run_bench: Callable[[], int]) -> int:
    """Run a bench and return its exit status: 1 when it fails, 130 when interrupted."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_bench()
    except BenchError as exc:
        print(f"{script}: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        return 130


def durability() -> dict[str, str]:
    """PostgreSQL's fsync and synchronous_commit, for every bench's JSON: a figure measured
    without durable commits does not count."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
        fsync, synchronous_commit = cursor.fetchone()
    return {"fsync": fsync, "synchronous_commit": synchronous_commit}
