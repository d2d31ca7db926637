"""A real worker process killed right after it commits a step, before it sends anything:
after a restart every webhook delivery and every audit sink record arrives, once."""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from firefly_site.celery import app
from pipelines import services as pipelines
from pipelines.models import AuditEntry, OutboxEvent, Run
from tests.conftest import wait_for
from tests.workers import WorkerProcess
from webhooks import services as webhooks
from webhooks.models import WebhookDelivery

CRASH_QUEUE = "firefly-tests-crash"  # tests/crash_settings.py
EVENTS = ["run.finished"]


@pytest.fixture
def crash_queue() -> Any:
    """This test's messages go to the queue only its own workers consume."""
    default = app.conf.task_default_queue
    app.conf.task_default_queue = CRASH_QUEUE
    app.control.purge()
    yield CRASH_QUEUE
    app.conf.task_default_queue = default


def worker(name: str, sink: Path, receiver_host: str, crash: bool) -> WorkerProcess:
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.crash_settings",
        "FIREFLY_AUDIT_SINKS": f"jsonl:{sink}",
        "FIREFLY_WEBHOOK_ALLOWED_HOSTS": receiver_host,
        "FIREFLY_OUTBOUND_ALLOWED_ADDRESSES": "127.0.0.1",
        "FIREFLY_OUTBOX_RELAY_AFTER_S": "0",
    }
    if crash:
        env["FIREFLY_TEST_CRASH_AFTER_COMMIT"] = "1"
    # One thread: nothing else is half done when the step's commit is followed by the kill
    # (a relay killed between its sink write and its commit would repeat lines, which
    # carry their entry's run, seq and hash for receivers to drop repeats).
    return WorkerProcess(name, concurrency=1, env=env)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_after_its_commit_loses_no_delivery_or_sink_record(
    hook_settings, receive, settings, tmp_path, crash_queue
):
    receiver = receive([200])
    host = f"127.0.0.1:{receiver.url.split(':')[2].split('/')[0]}"
    sink = tmp_path / "audit.jsonl"
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{sink}"]
    settings.FIREFLY_OUTBOX_RELAY_AFTER_S = 0
    webhooks.webhook_create(url=receiver.url, events=EVENTS)
    pipelines.pipeline_create(
        member_role="starter", spec={"name": "crashing", "steps": [{"name": "a", "type": "noop"}]}
    )
    run = pipelines.run_start(pipeline="crashing", inputs={"n": 1})
    assert pipelines.outbox_relay() > 0  # run.created's sink record, relayed here

    crashing = worker("crashing", sink, host, crash=True)
    try:
        # It may die before it answers the readiness ping: the return code tells.
        with suppress(RuntimeError):
            crashing.start()
        # The worker runs the step, commits, and dies where it would send the relay.
        assert crashing.process is not None
        wait_for(lambda: crashing.process.poll() is not None, 30, "the worker to die")
        assert crashing.process.returncode == -9
    finally:
        crashing.kill()
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED  # the step's commit stands
    waiting = list(OutboxEvent.objects.filter(relayed_at__isnull=True).values_list("event"))
    assert {e for (e,) in waiting} >= {*EVENTS, "audit.sink"}
    assert not WebhookDelivery.objects.exists()
    assert receiver.received == []

    restarted = worker("restarted", sink, host, crash=False)
    restarted.start()
    try:
        # Beat's sweep (or the restarted worker's own relay, whichever comes first) finds
        # what the dead worker never relayed; the worker delivers it.
        pipelines.outbox_sweep()
        wait_for(
            lambda: not OutboxEvent.objects.filter(relayed_at__isnull=True).exists(),
            30,
            "every outbox row to be relayed",
        )
        wait_for(lambda: len(receiver.received) >= len(EVENTS), 30, "the deliveries")
        assert pipelines.outbox_sweep() == 0
        assert pipelines.outbox_relay() == 0
        wait_for(
            lambda: (
                set(WebhookDelivery.objects.values_list("status", flat=True))
                == {WebhookDelivery.Status.DELIVERED}
            ),
            20,
            "deliveries to be marked delivered",
        )
    finally:
        restarted.stop()

    ids = [r["headers"]["Firefly-Delivery"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == len(EVENTS)  # each event once
    assert sorted(json.loads(r["body"])["type"] for r in receiver.received) == sorted(EVENTS)
    lines = [json.loads(line) for line in sink.read_text().splitlines()]
    recorded = [(line["run_id"], line["seq"]) for line in lines if line["run_id"] == run.pk]
    entries = list(AuditEntry.objects.filter(run=run).order_by("seq").values_list("run_id", "seq"))
    assert sorted(recorded) == entries  # every entry of the run, each once
