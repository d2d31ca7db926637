"""Firefly's production processes for tests: gunicorn as `make serve` runs it, Celery worker
and beat, a private Redis; each in its own process group, stopped whatever happens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from django.conf import settings

from tests.workers import database_url

ROOT = Path(__file__).resolve().parent.parent
# A production process starts with none of what the suite sets for itself (DEBUG unset,
# no DJANGO_ALLOW_ASYNC_UNSAFE): only these come from the test run.
PASSED_ON = ("PATH", "HOME", "LANG", "TMPDIR")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def production_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment docs/deploy.md documents: production settings, DEBUG unset, the test
    suite's keys (at least 32 bytes, not the development ones), the test database."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ON}
    env.update(
        DJANGO_SETTINGS_MODULE="firefly_site.settings",
        SECRET_KEY=settings.SECRET_KEY,
        FIREFLY_AUDIT_KEY=settings.FIREFLY_AUDIT_KEY,
        FIREFLY_SECRETS_KEY=settings.FIREFLY_SECRETS_KEY,
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        ALLOWED_HOSTS="127.0.0.1",
        FIREFLY_PLAIN_HTTP="true",
        FIREFLY_VAR_DIR=str(var_dir),
        CONN_MAX_AGE="0",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `args` in a new session; on the way out (a failed assertion included) its whole
    process group gets SIGTERM, then SIGKILL if it is still there after 15 s."""
    with log.open("ab") as out:
        child = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield child
    finally:
        stop(child)


def stop(child: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, sig)
        child.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    except ProcessLookupError:
        pass


def gunicorn(port: int) -> list[str]:
    """`make serve`'s web process (scripts/run.sh with WEB=gunicorn), on `port`."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "firefly_site/gunicorn_conf.py",
        "firefly_site.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
    ]


def celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "firefly_site", *args]


def redis_server(port: int) -> list[str]:
    return ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]


def wait_http(url: str, child: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Until `url` answers at all (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"the process exited: {log.read_text()[-3000:]}")
        try:
            # The first request loads Django in the worker: it may take seconds.
            requests.get(url, timeout=10, allow_redirects=False)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout} s: {log.read_text()[-3000:]}")


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout} s")
