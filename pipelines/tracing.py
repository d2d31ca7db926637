"""OpenTelemetry spans for runs and step attempts (the `otel` extra, on with FIREFLY_TRACING).

A run outlives the processes that work on it, so no span can stay open for it.
Every run has a trace id (a child run shares its parent's), and each span of the run
is recorded by the process that did the work: one per step attempt, by its worker,
and one for the run when it ends, spanning its start to its end. They all hang off
the run's root span id, derived from the run, so a tracing backend shows them as one
trace. A step's audit entry keeps its span's trace and span ids.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from pipelines.models import Run, StepRun

try:
    from opentelemetry import trace
except ImportError:  # the otel extra is not installed
    trace = None  # type: ignore[assignment]


# The tracer provider to use; None: OpenTelemetry's global one (set by the application).
provider: Any = None


def enabled() -> bool:
    return trace is not None and settings.FIREFLY_TRACING


def _tracer() -> Any:
    return (provider or trace.get_tracer_provider()).get_tracer("firefly")


def new_trace_id() -> str:
    """The trace of the span that is current (a traced request), or a new one."""
    if trace is not None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            return format(context.trace_id, "032x")
    return secrets.token_hex(16)


def _root(run_id: int, trace_id: str) -> Any:
    """The context the run's spans hang off: its trace, and a span id derived from the run."""
    digest = hashlib.sha256(f"{trace_id}:{run_id}".encode()).digest()
    span_id = int.from_bytes(digest[:8], "big") or 1
    parent = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=int(trace_id, 16),
            span_id=span_id,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
    )
    return trace.set_span_in_context(parent)


class StepSpan:
    """The span of one step attempt while its handler runs."""

    def __init__(self, span: Any) -> None:
        self.span = span
        context = span.get_span_context()
        self.ids = {
            "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
        }

    def finish(self, error: str) -> None:
        if error:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, error.splitlines()[-1]))


@contextmanager
def step_span(step: StepRun, pipeline: str, trace_id: str) -> Iterator[StepSpan]:
    run_id = step.run.pk
    attributes = {
        "firefly.pipeline": pipeline,
        "firefly.run_id": run_id,
        "firefly.step": step.step_name,
        "firefly.generation": step.generation,
        "firefly.attempt": step.attempt,
    }
    with _tracer().start_as_current_span(
        f"step {step.step_name}",
        context=_root(run_id, trace_id or secrets.token_hex(16)),
        attributes=attributes,
    ) as span:
        yield StepSpan(span)


def record_run(run: Run, pipeline: str) -> None:
    """Record the run's span, from its start to its end, once it has ended."""
    start = run.started_at or run.created_at
    span = _tracer().start_span(
        f"run {pipeline}",
        context=_root(run.pk, run.trace_id or secrets.token_hex(16)),
        start_time=int(start.timestamp() * 1e9),
        attributes={
            "firefly.pipeline": pipeline,
            "firefly.run_id": run.pk,
            "firefly.generation": run.generation,
            "firefly.status": run.status,
            **({"firefly.parent_run_id": run.parent_id} if run.parent_id else {}),
        },
    )
    if run.status != "succeeded":
        span.set_status(trace.Status(trace.StatusCode.ERROR, run.error or run.status))
    end = run.finished_at or start
    span.end(end_time=int(end.timestamp() * 1e9))
