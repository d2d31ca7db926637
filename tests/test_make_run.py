"""`make run` in a terminal: Ctrl-C, or a signal to make alone, stops every process it
started and ends with one quiet line, not with make's "*** ... Interrupt"."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.production import free_port
from tests.workers import database_url

ROOT = Path(__file__).resolve().parent.parent
# What make, bash or Python print when something failed: none of it on a normal stop.
CRASH_WORDS = ("***", "Interrupt", "Error", "Traceback", "by itself", "Terminated")


def session_processes(sid: int) -> list[str]:
    """The processes still alive in session `sid`, as "pid command"."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces.
        fields = text.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            alive.append(f"{stat.parent.name} {text.partition(' ')[2].partition(')')[0]})")
    return alive


class Terminal:
    """`make run` started as a person starts it: in its own session, a pseudo-terminal as
    its controlling terminal, make's process group in the foreground."""

    def __init__(self, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()

        def controlling_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        # -o: the virtualenv counts as installed (the suite runs from it).
        self.make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
            cwd=ROOT,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        self.output = b""

    def read(self, seconds: float, until: bytes | None = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until in self.output):
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the other end closed: every process has gone
                return
            if not chunk:
                return
            self.output += chunk

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def close(self) -> None:
        if self.make.poll() is None or session_processes(self.make.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.make.pid, signal.SIGKILL)
        self.make.wait()
        os.close(self.master)


@pytest.mark.parametrize(
    "stop", ["ctrl-c", "SIGINT to make", "SIGTERM to make"], ids=["ctrl-c", "int-make", "term-make"]
)
def test_a_normal_stop_of_make_run_is_quiet_and_leaves_nothing_running(tmp_path, stop):
    # A new user's shell: nothing of the suite's settings, database or keys.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(
        FIREFLY_VAR_DIR=str(tmp_path / "var"), PORT=str(free_port()), WORKERS="1", TERM="dumb"
    )
    terminal = Terminal(env)
    try:
        terminal.read(300, until=b"Stop with Ctrl-C.")
        assert "Firefly is running" in terminal.text(), terminal.text()
        # On a fresh demo database in debug, the banner names the demo logins.
        assert "Demo logins: admin, manager" in terminal.text()
        started = len(session_processes(terminal.make.pid))
        assert started >= 4, session_processes(terminal.make.pid)  # make, bash, web, worker...
        before = len(terminal.output)

        if stop == "ctrl-c":
            os.write(terminal.master, b"\x03")  # the terminal signals the foreground group
            expected = -signal.SIGINT
        elif stop == "SIGINT to make":
            terminal.make.send_signal(signal.SIGINT)  # as an IDE or a supervisor does
            expected = -signal.SIGINT
        else:
            terminal.make.send_signal(signal.SIGTERM)
            expected = -signal.SIGTERM
        terminal.make.wait(timeout=60)
        terminal.read(5)

        # make re-raises the signal it was stopped by (a calling shell sees 130 or 143).
        assert terminal.make.returncode == expected
        deadline = time.monotonic() + 30
        while session_processes(terminal.make.pid):
            assert time.monotonic() < deadline, session_processes(terminal.make.pid)
            time.sleep(0.2)
        ending = terminal.output[before:].decode(errors="replace")
        # The terminal echoes "^C" when Ctrl-C is typed.
        lines = [line.strip() for line in ending.split("\n") if line.strip() not in ("", "^C")]
        assert lines == ["Firefly stopped."], ending
        for word in CRASH_WORDS:
            assert word not in terminal.text(), terminal.text()
    finally:
        terminal.close()


def test_make_run_uses_the_database_and_broker_the_environment_names(transactional_db, tmp_path):
    """README, "PostgreSQL, Redis and more workers": `export DATABASE_URL=...`,
    `export CELERY_BROKER_URL=...`, `make run` (here the suite's database and broker)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        FIREFLY_VAR_DIR=str(tmp_path / "var"),
        PORT=str(free_port()),
        WORKERS="1",
        TERM="dumb",
    )
    terminal = Terminal(env)
    try:
        terminal.read(300, until=b"Stop with Ctrl-C.")
        text = terminal.text()
        assert "Firefly is running" in text, text
        # A real database gets no demo data, so the banner names no demo logins.
        assert "Demo data not loaded: DATABASE_URL names a real database." in text
        assert "Demo logins" not in text
        assert f"Database: {database_url()}; broker: {settings.CELERY_BROKER_URL}" in text
        requests.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=10).raise_for_status()
        os.write(terminal.master, b"\x03")
        terminal.make.wait(timeout=60)
        terminal.read(5)
        assert terminal.text().rstrip().endswith("Firefly stopped."), terminal.text()
    finally:
        terminal.close()
