"""Audit sinks fed by the outbox relay: JSONL, logging, OpenTelemetry, failures, rollbacks."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from pipelines import dispatch, services, sinks
from pipelines.models import AuditEntry, OutboxEvent, Pipeline, Run
from tests.pipelines.test_audit_roundtrip import consumer_check

pytestmark = pytest.mark.django_db

SPEC = {"name": "s1", "steps": [{"name": "a", "type": "noop"}]}


@pytest.fixture(autouse=True)
def fresh_sinks() -> Iterator[None]:
    sinks.resolve.cache_clear()
    sinks.failures.clear()
    yield
    sinks.resolve.cache_clear()
    sinks.failures.clear()


@pytest.fixture
def start_run(django_capture_on_commit_callbacks: Any) -> Callable[[], Run]:
    """Create pipeline s1 and start a run of it, committing (on_commit callbacks run)."""

    def start() -> Run:
        with django_capture_on_commit_callbacks(execute=True):
            services.pipeline_create(member_role="starter", spec=SPEC)
            # Pending, as before any worker: its start is one write of one entry.
            run = services.run_start(pipeline="s1", inputs={}, advance=False)
        services.outbox_relay()
        return run

    return start


def committed(run: Run) -> list[AuditEntry]:
    """The entries the two services wrote: the pipeline's, then the run's."""
    pipeline = Pipeline.objects.get(name="s1")
    return [
        *AuditEntry.objects.filter(pipeline=pipeline, run__isnull=True).order_by("seq"),
        *AuditEntry.objects.filter(run=run).order_by("seq"),
    ]


def audit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "firefly.audit"]


class Boom:
    name = "boom"

    def write(self, entries: Any) -> None:
        raise RuntimeError("sink is down")


def test_no_sinks_registers_nothing(settings, django_capture_on_commit_callbacks):
    settings.FIREFLY_AUDIT_SINKS = []
    with django_capture_on_commit_callbacks() as callbacks:
        services.pipeline_create(member_role="starter", spec=SPEC)
    assert callbacks == []
    assert not OutboxEvent.objects.exists()


def test_jsonl_gets_one_line_per_entry_after_commit(
    settings, tmp_path, django_capture_on_commit_callbacks
):
    path = tmp_path / "audit.jsonl"
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{path}"]

    with django_capture_on_commit_callbacks(execute=True):
        services.pipeline_create(member_role="starter", spec=SPEC)
        run = services.run_start(pipeline="s1", inputs={})
    assert not path.exists()  # nothing before the relay
    assert services.outbox_relay() == 2

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    entries = committed(run)
    assert [(line["run_id"], line["seq"], line["event"], line["hash"]) for line in lines] == [
        (e.run_id, e.seq, e.event, e.hash) for e in entries
    ]
    assert lines[1]["prev_hash"] == ""
    assert lines[1]["data"] == {"pipeline": "s1", "version": 1}
    assert datetime.fromisoformat(lines[1]["created_at"]) == entries[1].created_at
    # The line carries everything the HMAC covers: it can be verified without the database.
    key = settings.FIREFLY_AUDIT_KEY.encode()
    assert all(consumer_check(line, key) for line in lines)
    line = dict(lines[1], data={"pipeline": "forged", "version": 1})
    assert not consumer_check(line, key)


def test_jsonl_lines_stay_whole_with_concurrent_writers(settings, tmp_path, start_run):
    run = start_run()
    entries = committed(run)
    sink = sinks.resolve((f"jsonl:{tmp_path / 'audit.jsonl'}",))[0]

    def write() -> None:
        for _ in range(50):
            sink.write(entries)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 8 * 50 * len(entries)
    assert {json.loads(line)["hash"] for line in lines} == {e.hash for e in entries}


def test_logging_emits_one_structured_record_per_entry(settings, caplog, start_run):
    settings.FIREFLY_AUDIT_SINKS = ["logging"]
    caplog.set_level(logging.INFO, logger="firefly.audit")

    run = start_run()

    records = audit_records(caplog)
    pipeline = Pipeline.objects.get(name="s1")
    assert [r.getMessage() for r in records] == [
        f"audit pipeline={pipeline.pk} seq=1 pipeline.version_created",
        f"audit run={run.pk} seq=1 run.created",
    ]
    assert all(r.levelno == logging.INFO for r in records)
    fields = records[1].audit  # type: ignore[attr-defined]
    entry = committed(run)[1]
    assert fields["run_id"] == run.pk
    assert fields["seq"] == 1
    assert fields["event"] == "run.created"
    assert fields["status"] == "pending"
    assert fields["actor_name"] == "system"
    assert fields["hash"] == entry.hash
    assert fields["prev_hash"] == ""
    assert datetime.fromisoformat(fields["created_at"]) == entry.created_at


def test_otel_emits_log_records_with_firefly_attributes(settings, monkeypatch, start_run):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    monkeypatch.setitem(
        sinks.FACTORIES, "otel", lambda value, argument: sinks.OtelSink(provider=provider)
    )
    settings.FIREFLY_AUDIT_SINKS = ["otel"]

    run = start_run()

    logs = exporter.get_finished_logs()
    entries = committed(run)
    assert [log.log_record.body for log in logs] == [
        f"audit pipeline={entries[0].pipeline_id} seq=1 pipeline.version_created",
        f"audit run={run.pk} seq=1 run.created",
    ]
    assert "firefly.run_id" not in logs[0].log_record.attributes
    assert dict(logs[1].log_record.attributes or {}) == {
        "firefly.run_id": run.pk,
        "firefly.pipeline_id": entries[1].pipeline_id,
        "firefly.seq": 1,
        "firefly.event": "run.created",
        "firefly.step": "",
        "firefly.actor": "system",
        "firefly.status": "pending",
        "firefly.hash": entries[1].hash,
    }
    since_epoch = entries[1].created_at - datetime(1970, 1, 1, tzinfo=UTC)
    assert logs[1].log_record.timestamp == since_epoch // timedelta(microseconds=1) * 1000
    scope = logs[1].instrumentation_scope
    assert scope is not None
    assert scope.name == "firefly.audit"


def test_otel_from_settings_uses_the_global_provider(settings):
    (sink,) = sinks.resolve(("otel",))
    assert isinstance(sink, sinks.OtelSink)


def test_otel_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install firefly\[otel\]"):
        sinks.resolve(("otel",))


def test_failing_sinks_are_logged_and_counted_and_the_others_still_run(
    settings, tmp_path, caplog, monkeypatch, start_run
):
    monkeypatch.setitem(sinks.FACTORIES, "boom", lambda value, argument: Boom())
    missing = f"jsonl:{tmp_path / 'missing' / 'audit.jsonl'}"
    settings.FIREFLY_AUDIT_SINKS = [missing, "boom", "logging"]
    caplog.set_level(logging.INFO)

    run = start_run()

    assert Run.objects.filter(pk=run.pk).exists()
    assert sinks.failures == {missing: 2, "boom": 2}
    assert [r.audit["event"] for r in audit_records(caplog)] == [  # type: ignore[attr-defined]
        "pipeline.version_created",
        "run.created",
    ]
    errors = [r for r in caplog.records if r.name == "pipelines.sinks"]
    assert len(errors) == 4
    assert all(r.levelno == logging.ERROR and r.exc_info for r in errors)
    assert errors[-1].getMessage() == (
        f"audit sink boom failed: run={run.pk} pipeline={run.pipeline_version.pipeline_id} seqs=[1]"
    )
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], FileNotFoundError)


def test_nothing_is_published_when_the_transaction_rolls_back(
    settings, tmp_path, caplog, django_capture_on_commit_callbacks
):
    path = tmp_path / "audit.jsonl"
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{path}", "logging"]
    caplog.set_level(logging.INFO, logger="firefly.audit")

    def start_and_abort() -> None:
        with transaction.atomic():
            services.pipeline_create(member_role="starter", spec=SPEC)
            services.run_start(pipeline="s1", inputs={})
            raise RuntimeError("abort")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        start_and_abort()

    assert callbacks == []
    assert not OutboxEvent.objects.exists()
    assert not path.exists()
    assert audit_records(caplog) == []
    assert not Pipeline.objects.filter(name="s1").exists()


def test_sinks_follow_the_setting_when_it_changes(
    settings, tmp_path, caplog, django_capture_on_commit_callbacks
):
    path = tmp_path / "audit.jsonl"
    caplog.set_level(logging.INFO, logger="firefly.audit")

    settings.FIREFLY_AUDIT_SINKS = ["logging"]
    with django_capture_on_commit_callbacks(execute=True):
        services.pipeline_create(member_role="starter", spec=SPEC)
    services.outbox_relay()
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{path}"]
    with django_capture_on_commit_callbacks(execute=True):
        run = services.run_start(pipeline="s1", inputs={}, advance=False)
    services.outbox_relay()

    assert [r.audit["event"] for r in audit_records(caplog)] == [  # type: ignore[attr-defined]
        "pipeline.version_created"
    ]
    assert [json.loads(line)["run_id"] for line in path.read_text().splitlines()] == [run.pk]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["logging", "kafka:topic"], "unknown sink 'kafka:topic'"),
        (["jsonl"], "'jsonl' needs a file"),
        (["logging:verbose"], "'logging:verbose' takes no argument"),
    ],
)
def test_bad_sink_setting_is_improperly_configured(settings, value, message):
    settings.FIREFLY_AUDIT_SINKS = value
    with pytest.raises(ImproperlyConfigured, match=message):
        services.pipeline_create(member_role="starter", spec=SPEC)
    assert not Pipeline.objects.filter(name="s1").exists()


@pytest.mark.django_db(transaction=True)
def test_a_bad_sink_setting_commits_nothing_even_when_the_commit_is_pipelined(
    settings, monkeypatch
):
    """A step's writes and its COMMIT go out in one pipeline (real commits here).

    Were the sinks resolved after that COMMIT, a bad setting would leave the step
    committed as queued while its message, an on-commit callback, was dropped: the run
    would stall until the reaper. They are resolved first, so nothing is written.
    """
    sent: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        dispatch.app, "send_task", lambda name, args, **o: sent.append((name, args))
    )
    services.pipeline_create(member_role="starter", spec=SPEC)
    run = services.run_start(pipeline="s1", inputs={}, advance=False)
    step = run.steps.get(step_name="a")
    entries = AuditEntry.objects.filter(run=run).count()
    settings.FIREFLY_AUDIT_SINKS = ["kafka:topic"]

    with pytest.raises(ImproperlyConfigured, match="unknown sink"):
        services.run_advance(run_id=run.pk)

    step.refresh_from_db()
    assert step.status == "pending"
    assert AuditEntry.objects.filter(run=run).count() == entries
    assert sent == [(dispatch.ADVANCE_RUN, (run.pk,))]  # run_start's, nothing since

    settings.FIREFLY_AUDIT_SINKS = []
    services.run_advance(run_id=run.pk)
    step.refresh_from_db()
    assert step.status == "queued"
    assert sent[-1] == (dispatch.EXECUTE_STEP, (step.pk,))


def test_blank_items_are_ignored():
    assert [sink.name for sink in sinks.resolve(("logging", " ", ""))] == ["logging"]


def test_jsonl_sink_is_named_by_its_setting(tmp_path: Path):
    (sink,) = sinks.resolve((f"jsonl:{tmp_path}/a.jsonl",))
    assert sink.name == f"jsonl:{tmp_path}/a.jsonl"
