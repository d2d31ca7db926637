"""A real Celery worker process for integration tests, pointed at the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from firefly_site.celery import app
from tests.hosts import Host

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerProcess:
    """`celery -A firefly_site worker` in its own process group; kill() is a SIGKILL."""

    def __init__(
        self,
        name: str,
        concurrency: int = 8,
        env: dict[str, str] | None = None,
        pool: str = "threads",
        queues: str = "",
        host: Host | None = None,
    ) -> None:
        self.name = name
        self.concurrency = concurrency
        self.env = env or {}
        self.pool = pool
        self.queues = queues  # comma-separated; "" = the default queue
        self.host = host  # run in this simulated host, reaching services through its link
        self.process: subprocess.Popen[bytes] | None = None
        self.log = ROOT / "var" / f"test-worker-{name}.log"
        self.node = f"{name}-{os.getpid()}@{os.uname().nodename}"

    def start(self) -> None:
        self.log.parent.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings",
            "DATABASE_URL": self._url(database_url()),
            "CELERY_BROKER_URL": self._url(settings.CELERY_BROKER_URL),
            "PYTHONPATH": str(ROOT),
            "CONN_MAX_AGE": "0",
            **self.env,
        }
        with self.log.open("ab") as log:
            argv = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "firefly_site",
                "worker",
                "-P",
                self.pool,
                "-c",
                str(self.concurrency),
                *(["-Q", self.queues] if self.queues else []),
                "-n",
                self.node,
                "-l",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
            self.process = subprocess.Popen(
                self.host.command(argv) if self.host else argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready()

    def _url(self, url: str) -> str:
        return self.host.url(url) if self.host else url

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log}")
            if app.control.ping(destination=[self.node], timeout=0.5):
                return
        raise RuntimeError(f"worker {self.node} not ready after {timeout}s; see {self.log}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def beat_process(
    settings_module: str, schedule: Path, log_name: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A firefly_site beat` with a test settings module (its schedule), stopped
    at the end whatever happens."""
    log = ROOT / "var" / log_name
    log.parent.mkdir(exist_ok=True)
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    argv = [sys.executable, "-m", "celery", "-A", "firefly_site", "beat", "-l", "WARNING"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*argv, "-s", str(schedule), "--pidfile="],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
