"""OpenTelemetry: a span per step attempt and per run, their ids kept on the audit entries."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pipelines import services, sinks, tracing
from pipelines.models import AuditEntry, Run
from tests.approvals.conftest import drive

pytestmark = pytest.mark.django_db

STEPS = [
    {"name": "flaky", "type": "fail", "config": {"times": 1}, "retries": 1, "retry_backoff_s": 0},
    {"name": "after", "type": "noop", "after": ["flaky"]},
]


@pytest.fixture
def exporter(monkeypatch: Any) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "provider", provider)
    return exporter


def test_a_span_per_step_attempt_and_one_per_run(
    exporter, settings, make_pipeline, django_capture_on_commit_callbacks
):
    settings.FIREFLY_TRACING = True
    name = make_pipeline(STEPS)
    with django_capture_on_commit_callbacks(execute=True):
        run = drive(services.run_start(pipeline=name, inputs={}))
    assert run.status == Run.Status.SUCCEEDED

    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == [
        "step flaky",
        "step flaky",
        "step after",
        f"run {name}",
    ]
    assert {format(span.context.trace_id, "032x") for span in spans} == {run.trace_id}
    steps = [dict(span.attributes) for span in spans[:3]]
    assert steps == [
        {
            "firefly.pipeline": name,
            "firefly.run_id": run.pk,
            "firefly.step": step,
            "firefly.generation": 1,
            "firefly.attempt": attempt,
        }
        for step, attempt in (("flaky", 1), ("flaky", 2), ("after", 1))
    ]
    assert spans[0].status.status_code == StatusCode.ERROR
    assert spans[1].status.status_code == StatusCode.UNSET
    run_span = spans[3]
    assert dict(run_span.attributes) == {
        "firefly.pipeline": name,
        "firefly.run_id": run.pk,
        "firefly.generation": 1,
        "firefly.status": "succeeded",
    }
    assert run_span.start_time == int(run.started_at.timestamp() * 1e9)
    assert run_span.end_time == int(run.finished_at.timestamp() * 1e9)
    # Spans of the run hang off one parent: the run's root.
    assert len({span.parent.span_id for span in spans}) == 1

    # Each attempt's audit entry names its span.
    entries = AuditEntry.objects.filter(run=run, event__in=["step.failed", "step.succeeded"])
    kept = [(e.step_name, e.data["trace_id"], e.data["span_id"]) for e in entries.order_by("seq")]
    assert kept == [
        (span.attributes["firefly.step"], run.trace_id, format(span.context.span_id, "016x"))
        for span in spans[:3]
    ]


def test_no_spans_and_no_ids_when_tracing_is_off(exporter, settings, make_pipeline):
    settings.FIREFLY_TRACING = False
    name = make_pipeline([{"name": "only", "type": "noop"}])
    run = drive(services.run_start(pipeline=name, inputs={}))

    assert run.status == Run.Status.SUCCEEDED
    assert exporter.get_finished_spans() == ()
    entry = AuditEntry.objects.get(run=run, event="step.succeeded")
    assert "trace_id" not in (entry.data or {})
    assert len(run.trace_id) == 32


def test_a_child_run_shares_its_parents_trace(exporter, settings, make_pipeline):
    settings.FIREFLY_TRACING = True
    make_pipeline([{"name": "x", "type": "noop"}], name="traced-child")
    steps = [{"name": "hand", "type": "handoff", "config": {"pipeline": "traced-child"}}]
    parent = drive(services.run_start(pipeline=make_pipeline(steps), inputs={}))
    child = drive(Run.objects.get(parent=parent))

    assert child.trace_id == parent.trace_id
    trace_ids = {span.context.trace_id for span in exporter.get_finished_spans()}
    assert trace_ids == {int(parent.trace_id, 16)}
    names = {span.name for span in exporter.get_finished_spans()}
    assert {"step hand", "step x"} <= names


def test_the_otel_sinks_log_records_of_a_step_carry_its_trace_and_span_ids(
    exporter, settings, monkeypatch, make_pipeline
):
    logs = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    monkeypatch.setitem(
        sinks.FACTORIES, "otel", lambda value, argument: sinks.OtelSink(provider=provider)
    )
    sinks.resolve.cache_clear()
    settings.FIREFLY_AUDIT_SINKS = ["otel"]
    settings.FIREFLY_TRACING = True
    name = make_pipeline(STEPS)
    run = drive(services.run_start(pipeline=name, inputs={}))
    services.outbox_relay()
    sinks.resolve.cache_clear()

    records = [log.log_record for log in logs.get_finished_logs()]
    by_event = [
        (r.attributes["firefly.step"], r.trace_id, r.span_id)
        for r in records
        if r.attributes and r.attributes["firefly.event"] in ("step.failed", "step.succeeded")
    ]
    spans = exporter.get_finished_spans()[:3]
    assert by_event == [
        (span.attributes["firefly.step"], span.context.trace_id, span.context.span_id)
        for span in spans
    ]
    assert {trace_id for _, trace_id, _ in by_event} == {int(run.trace_id, 16)}
    # A run's own events come from no step span: their records name none.
    started = next(r for r in records if r.attributes["firefly.event"] == "run.started")
    assert not started.span_id
