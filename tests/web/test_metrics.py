"""Prometheus metrics: what a run and a decision count, the state read at scrape time,
who may scrape, and a real worker's own counters on its port."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from approvals import services as approvals
from approvals.models import HumanTask
from firefly_site.celery import app
from pipelines import services
from pipelines.models import Run
from tests.conftest import wait_finished
from tests.workers import WorkerProcess

GATED = [
    {"name": "build", "type": "noop"},
    {
        "name": "review",
        "type": "approval",
        "after": ["build"],
        "config": {"assignee_role": "reviewers"},
    },
]


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def scrape(client: Client | None = None, **headers: Any) -> dict[Any, float]:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return samples(response.content.decode())


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db
def test_a_run_and_its_decision_are_counted_and_the_open_task_shown(
    users, django_capture_on_commit_callbacks
):
    services.pipeline_create(member_role="starter", spec={"name": "counted", "steps": GATED})
    before = scrape()
    with django_capture_on_commit_callbacks(execute=True):
        run = services.run_start(pipeline="counted", inputs={}, actor=users["starter"])
    with django_capture_on_commit_callbacks(execute=True):
        services.run_advance(run_id=run.pk)
    queued = scrape()
    assert value(queued, "firefly_steps", status="queued") == 1
    with django_capture_on_commit_callbacks(execute=True):
        services.step_execute(step_run_id=run.steps.get(step_name="build").pk)
    waiting = scrape()
    assert value(waiting, "firefly_open_tasks", pipeline="counted", age="1h") == 1
    assert value(waiting, "firefly_steps", status="queued") == 0

    task = HumanTask.objects.get(run=run)
    with django_capture_on_commit_callbacks(execute=True):
        approvals.task_approve(task_id=task.pk, user=users["r1"])
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    after = scrape()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("firefly_runs_started_total", pipeline="counted") == 1
    assert grew("firefly_runs_finished_total", pipeline="counted", status="succeeded") == 1
    assert (
        grew(
            "firefly_decisions_total",
            pipeline="counted",
            kind="approval",
            channel="web",
            outcome="completed",
        )
        == 1
    )
    assert grew("firefly_time_to_decision_seconds_count", pipeline="counted") == 1
    assert grew("firefly_step_duration_seconds_count", pipeline="counted", type="noop") == 1
    assert grew("firefly_audit_entries_written_total") >= 6
    assert value(after, "firefly_open_tasks", pipeline="counted", age="1h") == 0


@pytest.mark.django_db
def test_only_allowed_addresses_or_the_token_may_scrape(settings):
    settings.FIREFLY_METRICS_TOKEN = "s3cret-metrics-token"
    outside = Client(REMOTE_ADDR="10.1.2.3")
    assert outside.get("/metrics").status_code == 403
    wrong = outside.get("/metrics", HTTP_AUTHORIZATION="Bearer guessed")
    assert wrong.status_code == 403
    assert b"firefly_" not in wrong.content
    scrape(outside, HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    scrape(Client(REMOTE_ADDR="127.0.0.1"))  # the default allow-list: this host

    settings.FIREFLY_METRICS_TOKEN = ""
    settings.FIREFLY_METRICS_ALLOWED_ADDRESSES = []
    for client in (outside, Client(REMOTE_ADDR="127.0.0.1")):
        # No token configured: an empty bearer is no key.
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert Client().post("/metrics").status_code == 405


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_queue() -> Iterator[str]:
    default = app.conf.task_default_queue
    app.conf.task_default_queue = "firefly-tests-crash"  # tests/crash_settings.py
    app.control.purge()
    yield app.conf.task_default_queue
    app.conf.task_default_queue = default


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_serves_its_own_counters_on_its_port(own_queue):
    port = free_port()
    worker = WorkerProcess(
        "metrics",
        concurrency=2,
        env={"DJANGO_SETTINGS_MODULE": "tests.crash_settings", "FIREFLY_METRICS_PORT": str(port)},
    )
    services.pipeline_create(
        member_role="starter", spec={"name": "measured", "steps": [{"name": "a", "type": "noop"}]}
    )
    worker.start()
    try:
        run = wait_finished(services.run_start(pipeline="measured", inputs={}))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            found = samples(answer.read().decode())
    finally:
        worker.stop()
    assert run.status == Run.Status.SUCCEEDED
    assert (
        value(found, "firefly_step_duration_seconds_count", pipeline="measured", type="noop") == 1
    )
    assert value(found, "firefly_runs_finished_total", pipeline="measured", status="succeeded") == 1
