"""The embedded default that `make run` uses: SQLite and Celery's filesystem transport."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(
        # As `make run` starts it: the demo runs in debug.
        DEBUG="true",
        DJANGO_SETTINGS_MODULE="firefly_site.settings",
        FIREFLY_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(ROOT),
    )
    return env


def manage(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_run_completes_on_sqlite_and_the_filesystem_broker(embedded_env, tmp_path):
    migrated = manage(embedded_env, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    loaded = manage(embedded_env, "load_demo")
    assert loaded.returncode == 0, loaded.stderr
    assert "demo user admin" in loaded.stdout

    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "firefly_site",
            "worker",
            "-P",
            "threads",
            "-c",
            "8",
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=embedded_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        result = manage(
            embedded_env,
            "start_run",
            "fan-out",
            "--organization",
            "acme",
            "--inputs",
            '{"text": "a b"}',
            "--wait",
            "--timeout",
            "90",
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)

    assert result.returncode == 0, (
        result.stdout + result.stderr + (tmp_path / "worker.log").read_text()
    )
    assert "succeeded" in result.stdout
    assert '"words": 2' in result.stdout
    assert (tmp_path / "var" / "firefly.sqlite3").exists()
    status = manage(embedded_env, "run_status", "1")
    assert "flaky" in status.stdout, status.stdout + status.stderr
    assert "attempt 2" in status.stdout, status.stdout
