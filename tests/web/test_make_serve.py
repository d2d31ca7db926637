"""`make serve` as a process supervisor runs it: a signal to make alone stops everything."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from typing import Any

import pytest
import requests
from django.core.management import call_command
from django.test import override_settings

from tests.production import ROOT, free_port, production_env, wait_http


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_make_alone_stops_every_process_it_started(transactional_db, tmp_path, sig):
    # Demo users in the database: production still does not advertise them.
    with override_settings(FIREFLY_DEMO=True):
        call_command("load_demo", stdout=io.StringIO())
    port = free_port()
    env = production_env(
        tmp_path / "var",
        PORT=str(port),
        WORKERS="1",
        WEB_CONCURRENCY="1",
        # make serve turns debug off whatever the environment says.
        DEBUG="true",
    )
    log = tmp_path / "make.log"

    def default_signals() -> None:
        # As a supervisor starts it: SIGINT not ignored (a test run in the background
        # of a shell would pass that on).
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with log.open("ab") as out:
        # -o: the virtualenv counts as installed (the suite runs from it).
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signals,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", make, log, timeout=300)
        missing = requests.get(f"{base}/no-such-page/", timeout=10)
        assert missing.status_code == 404
        assert "URLconf" not in missing.text  # Django's debug page names it
        # The workers and beat are up: beat's reaper has run on a worker.
        deadline = time.monotonic() + 90
        while requests.get(f"{base}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, requests.get(f"{base}/readyz", timeout=10).text
            time.sleep(1)

        make.send_signal(sig)  # make alone, not its process group
        make.wait(timeout=60)
        deadline = time.monotonic() + 30
        while group_alive(make.pid):
            assert time.monotonic() < deadline, f"processes of make serve still run: {log}"
            time.sleep(0.2)
        output: Any = log.read_text()
        assert "Firefly is running" in output
        assert "Demo logins" not in output
        assert "firefly-admin" not in output
        # A stop asked for ends quietly: no make "*** ... Interrupt" line, no traceback.
        assert output.rstrip().endswith("Firefly stopped."), output
        for word in ("***", "Interrupt", "Error", "Traceback", "by itself"):
            assert word not in output, output
    finally:
        if group_alive(make.pid):
            os.killpg(make.pid, signal.SIGKILL)
        make.wait()


def test_make_serve_refuses_to_start_without_keys_even_with_debug_asked_for(tmp_path):
    env = production_env(tmp_path / "var", DEBUG="true")
    for key in ("SECRET_KEY", "FIREFLY_AUDIT_KEY", "FIREFLY_SECRETS_KEY"):
        del env[key]
    made = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode != 0
    assert "Set SECRET_KEY: it is required when DEBUG is off" in made.stderr
    assert "Firefly is running" not in made.stdout
