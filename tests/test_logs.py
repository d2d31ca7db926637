"""Log records carry the run, step, Celery task and trace they are about, as text or as
JSON lines (FIREFLY_LOG_FORMAT=json), in the app and in a real worker process."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from firefly_site import logs
from firefly_site.celery import app
from pipelines import services
from pipelines.models import Run
from tests.conftest import wait_finished
from tests.workers import ROOT, WorkerProcess

CHATTY = {"name": "a", "type": "python", "config": {"callable": "tests.pipelines.callables.chatty"}}
OWN_QUEUE = "firefly-tests-crash"  # tests/crash_settings.py: no other worker consumes it


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """The step loggers' records, formatted as JSON and as text."""
    as_json, as_text = io.StringIO(), io.StringIO()
    handlers = []
    for stream, formatter in (
        (as_json, logs.JsonFormatter()),
        (as_text, logging.Formatter("%(name)s%(context)s: %(message)s")),
    ):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(logs.ContextFilter())
        handlers.append(handler)
    logger = logging.getLogger("firefly.step")
    level = logger.level
    logger.setLevel(logging.INFO)
    for handler in handlers:
        logger.addHandler(handler)
    yield as_json, as_text
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.django_db
@pytest.mark.parametrize("timeout_s", [None, 5])
def test_a_steps_records_name_its_run_and_step(captured, timeout_s):
    step = {**CHATTY, **({"timeout_s": timeout_s} if timeout_s else {})}
    services.pipeline_create(member_role="starter", spec={"name": "talks", "steps": [step]})
    run = services.run_start(pipeline="talks", inputs={})
    services.run_advance(run_id=run.pk)
    services.step_execute(step_run_id=run.steps.get().pk)

    as_json, as_text = captured
    [record] = records(as_json)
    assert record["message"] == f"chatty step says hello to run {run.pk}"
    assert (record["run_id"], record["step"], record["level"]) == (run.pk, "a", "WARNING")
    assert record["logger"] == "firefly.step.talks.a"
    assert record["step_run_id"] == run.steps.get().pk
    assert "context" not in record
    assert f"[run_id={run.pk} step=a step_run_id=" in as_text.getvalue()


def test_outside_a_step_nothing_is_added():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger("firefly.test.plain")
    logger.addHandler(handler)
    try:
        logger.warning("plain")
        with logs.bound(run_id=7, step=""):
            logger.warning("bound")
    finally:
        logger.removeHandler(handler)
    plain, bound = records(stream)
    assert not {"run_id", "step", "task_id"} & set(plain)
    assert bound["run_id"] == 7
    assert "step" not in bound  # empty values are left out


def test_an_unknown_log_format_is_refused_by_name():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings"}
    env["FIREFLY_LOG_FORMAT"] = "xml"
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "FIREFLY_LOG_FORMAT must be 'text' or 'json', not 'xml'" in done.stderr


@pytest.fixture
def own_queue() -> Iterator[str]:
    default = app.conf.task_default_queue
    app.conf.task_default_queue = OWN_QUEUE
    app.control.purge()
    yield OWN_QUEUE
    app.conf.task_default_queue = default


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_writes_json_lines_with_the_task_run_and_step(own_queue):
    worker = WorkerProcess(
        "jsonlogs",
        concurrency=2,
        env={
            "DJANGO_SETTINGS_MODULE": "tests.crash_settings",
            "FIREFLY_LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        },
    )
    worker.log.unlink(missing_ok=True)
    services.pipeline_create(member_role="starter", spec={"name": "talks", "steps": [CHATTY]})
    worker.start()
    try:
        run = wait_finished(services.run_start(pipeline="talks", inputs={}))
    finally:
        worker.stop()
    assert run.status == Run.Status.SUCCEEDED
    lines = worker.log.read_text().splitlines()
    [said] = [json.loads(line) for line in lines if "chatty step says hello" in line]
    assert (said["run_id"], said["step"], said["level"]) == (run.pk, "a", "WARNING")
    assert said["task_id"]  # the Celery task that ran the step
    assert said["trace_id"] == run.trace_id
