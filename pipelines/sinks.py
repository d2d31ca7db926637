"""Extra audit destinations (FIREFLY_AUDIT_SINKS), fed through the outbox.

Each flush of a chain writes, with its entries, one outbox row per sink naming them;
the outbox relay hands the entries to that sink and marks the row relayed only once
the sink took them, so a process dying after the commit loses none.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from pipelines.canonical import published
from pipelines.models import AuditEntry, OutboxEvent

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The outbox event of a batch of entries for one sink.
SINK_EVENT = "audit.sink"

log = logging.getLogger(__name__)
audit_log = logging.getLogger("firefly.audit")

# Failed batches per sink (by its FIREFLY_AUDIT_SINKS value), for health checks and tests.
failures: Counter[str] = Counter()
_failures_lock = threading.Lock()


class Sink(Protocol):
    name: str

    def write(self, entries: Sequence[AuditEntry]) -> None: ...


def record(entry: AuditEntry) -> dict[str, Any]:
    """The entry as `canonical.published` gives it, plus `seq` and `hash`.

    Built from the same canonical JSON as the hash, so a consumer can check an entry
    against its HMAC without the database.
    """
    values = published(entry)
    values.update(seq=entry.seq, hash=entry.hash)
    return values


def _message(entry: AuditEntry) -> str:
    owner = f"run={entry.run_id}" if entry.run_id else f"pipeline={entry.pipeline_id}"
    step = f" step={entry.step_name}" if entry.step_name else ""
    return f"audit {owner} seq={entry.seq} {entry.event}{step}"


class JsonlSink:
    """Appends one canonical JSON object per entry to a file."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, entries: Sequence[AuditEntry]) -> None:
        data = "".join(
            json.dumps(record(entry), sort_keys=True, separators=(",", ":")) + "\n"
            for entry in entries
        ).encode()
        # Opened per batch so that a rotated file is picked up; one write of the whole
        # batch in append mode keeps lines whole between processes, and the lock keeps
        # them whole between threads of one process.
        with self._lock, self.path.open("ab") as out:
            out.write(data)


class LoggingSink:
    """One INFO record per entry on the "firefly.audit" logger, fields in `audit`."""

    name = "logging"

    def write(self, entries: Sequence[AuditEntry]) -> None:
        for entry in entries:
            audit_log.info(_message(entry), extra={"audit": record(entry)})


class OtelSink:
    """One OpenTelemetry log record per entry."""

    name = "otel"

    def __init__(self, provider: LoggerProvider | None = None) -> None:
        try:
            from opentelemetry import _logs, trace
        except ImportError as exc:
            raise ImportError(
                "The 'otel' audit sink needs OpenTelemetry: pip install firefly[otel]"
            ) from exc
        self._logs = _logs
        self._trace = trace
        # The global provider is a proxy until the application sets one, so taking it
        # now still reaches a provider configured later.
        self.logger = (provider or _logs.get_logger_provider()).get_logger("firefly.audit")

    def write(self, entries: Sequence[AuditEntry]) -> None:
        for entry in entries:
            attributes: dict[str, str | int] = {
                "firefly.pipeline_id": entry.pipeline_id,
                "firefly.seq": entry.seq,
                "firefly.event": entry.event,
                "firefly.step": entry.step_name,
                "firefly.actor": entry.actor_name,
                "firefly.status": entry.status,
                "firefly.hash": entry.hash,
            }
            # OpenTelemetry attributes cannot be null; a pipeline's entries have no run.
            if entry.run_id is not None:
                attributes["firefly.run_id"] = entry.run_id
            self.logger.emit(
                self._logs.LogRecord(
                    timestamp=(entry.created_at - EPOCH) // timedelta(microseconds=1) * 1000,
                    context=self._span_context(entry),
                    severity_number=self._logs.SeverityNumber.INFO,
                    severity_text="INFO",
                    body=_message(entry),
                    attributes=attributes,
                )
            )

    def _span_context(self, entry: AuditEntry) -> Any:
        """The context of the step attempt's span, so that a log backend links the record to
        its trace; None for entries that no span wrote (tracing off, run events)."""
        ids = entry.data if isinstance(entry.data, dict) else {}
        try:
            trace_id, span_id = int(ids["trace_id"], 16), int(ids["span_id"], 16)
        except (KeyError, TypeError, ValueError):
            return None
        span = self._trace.NonRecordingSpan(
            self._trace.SpanContext(
                trace_id=trace_id,
                span_id=span_id,
                is_remote=True,
                trace_flags=self._trace.TraceFlags(self._trace.TraceFlags.SAMPLED),
            )
        )
        return self._trace.set_span_in_context(span)


def _no_argument(factory: Callable[[], Sink]) -> Callable[[str, str], Sink]:
    def build(value: str, argument: str) -> Sink:
        if argument:
            raise ImproperlyConfigured(f"FIREFLY_AUDIT_SINKS: {value!r} takes no argument.")
        return factory()

    return build


def _jsonl(value: str, path: str) -> Sink:
    if not path:
        raise ImproperlyConfigured(
            f"FIREFLY_AUDIT_SINKS: {value!r} needs a file, as in 'jsonl:/var/log/audit.jsonl'."
        )
    return JsonlSink(value, path)


# Sink kind -> factory(setting value, text after the first ":").
FACTORIES: dict[str, Callable[[str, str], Sink]] = {
    "jsonl": _jsonl,
    "logging": _no_argument(LoggingSink),
    "otel": _no_argument(OtelSink),
}


@functools.lru_cache(maxsize=8)
def resolve(values: tuple[str, ...]) -> tuple[Sink, ...]:
    """The sinks for a FIREFLY_AUDIT_SINKS value, built once per distinct value."""
    built = []
    for raw in values:
        value = raw.strip()
        if not value:
            continue
        kind, _, argument = value.partition(":")
        factory = FACTORIES.get(kind)
        if factory is None:
            known = ", ".join(sorted(FACTORIES))
            raise ImproperlyConfigured(
                f"FIREFLY_AUDIT_SINKS: unknown sink {value!r} (known kinds: {known})."
            )
        built.append(factory(value, argument))
    return tuple(built)


def publish(
    sinks: Sequence[Sink], entries: Sequence[AuditEntry], *, raise_errors: bool = False
) -> None:
    """Write the entries to each sink; a failing sink is logged and counted (and raised
    with `raise_errors`)."""
    for sink in sinks:
        try:
            sink.write(entries)
        except Exception:
            with _failures_lock:
                failures[sink.name] += 1
            first = entries[0]
            log.exception(
                "audit sink %s failed: run=%s pipeline=%s seqs=%s",
                sink.name,
                first.run_id,
                first.pipeline_id,
                [entry.seq for entry in entries],
            )
            if raise_errors:
                raise


def outbox_rows(entries: Sequence[AuditEntry]) -> list[OutboxEvent]:
    """One outbox row per configured sink naming these entries of one chain; none without sinks.

    The sinks are resolved now, inside the transaction, so that a misconfiguration fails
    the write loudly instead of at relay time.
    """
    if not settings.FIREFLY_AUDIT_SINKS or not entries:
        return []
    first = entries[0]
    batch = {"run": first.run_id, "pipeline": first.pipeline_id, "seqs": [e.seq for e in entries]}
    return [
        OutboxEvent(
            organization_id=first.organization_id,
            event=SINK_EVENT,
            payload={"sink": sink.name, **batch},
        )
        for sink in resolve(tuple(settings.FIREFLY_AUDIT_SINKS))
    ]


def deliver(payload: dict[str, Any]) -> None:
    """Write an outbox row's entries to its sink; a failure is counted and raised.

    A sink no longer configured is skipped (its row counts as relayed).
    """
    named = {sink.name: sink for sink in resolve(tuple(settings.FIREFLY_AUDIT_SINKS))}
    sink = named.get(payload["sink"])
    if sink is None:
        log.warning("audit sink %s is no longer configured: batch dropped", payload["sink"])
        return
    chain = AuditEntry.objects.filter(pipeline_id=payload["pipeline"], run_id=payload["run"])
    entries = list(chain.filter(seq__in=payload["seqs"]).order_by("seq"))
    if entries:
        publish([sink], entries, raise_errors=True)
