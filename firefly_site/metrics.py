"""Prometheus metrics: counters kept by the processes that do the work, and gauges read
from the database when scraped.

Counters and histograms (runs started and finished, step durations, decisions, time to
decision, webhook attempts, reaper recoveries, audit entries) count in the process that
makes the change: runs and decisions after their commit, audit entries as they are
written (the step path schedules nothing after commit for a counter). Each process
keeps its own: `/metrics` on the web serves its process's (every gunicorn process's
with `PROMETHEUS_MULTIPROC_DIR`, a directory they share), and a Celery worker started
with `FIREFLY_METRICS_PORT` serves its own on that port. Gauges of the present state
(steps queued and running, open tasks by age) come from the database at scrape time, so
any web process gives the same answer.

`/metrics` answers addresses in `FIREFLY_METRICS_ALLOWED_ADDRESSES` (default the local
host) or a request with `Authorization: Bearer <FIREFLY_METRICS_TOKEN>`; anyone else
gets 403.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

RUNS_STARTED = Counter("firefly_runs_started", "Runs started", ["pipeline"])
RUNS_FINISHED = Counter("firefly_runs_finished", "Runs finished", ["pipeline", "status"])
STEP_SECONDS = Histogram(
    "firefly_step_duration_seconds",
    "Time a step's handler took",
    ["pipeline", "type"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
)
DECISIONS = Counter(
    "firefly_decisions",
    "Human tasks decided, by where (web, api, deadline) and outcome (completed, rejected)",
    ["pipeline", "kind", "channel", "outcome"],
)
DECISION_SECONDS = Histogram(
    "firefly_time_to_decision_seconds",
    "From a task's opening to its decision",
    ["pipeline"],
    buckets=(60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400),
)
WEBHOOK_ATTEMPTS = Counter("firefly_webhook_attempts", "Webhook delivery attempts", ["outcome"])
RECOVERIES = Counter("firefly_reaper_recoveries", "What the reaper recovered", ["kind"])
AUDIT_ENTRIES = Counter(
    "firefly_audit_entries_written", "Audit entries written (counted at the write)"
)

# Open tasks by how long they have waited (at most): approvals.selectors.task_gauges.
AGE_BUCKETS = (
    ("1h", timedelta(hours=1)),
    ("1d", timedelta(days=1)),
    ("7d", timedelta(days=7)),
    ("+Inf", None),
)


def after_commit(metric: Any, amount: float = 1, **labels: str) -> None:
    """Count once the current transaction commits (never for one rolled back)."""
    target = metric.labels(**labels) if labels else metric
    transaction.on_commit(lambda: target.inc(amount))


def on_event(event: str, payload: dict[str, Any]) -> None:
    """The event hook (registered by the pipelines app): runs and decisions."""
    pipeline = str(payload.get("pipeline") or "")
    if event == "run.finished":
        RUNS_FINISHED.labels(pipeline, str(payload.get("status") or "")).inc()
    elif event == "task.decided":
        channel = str(payload.get("channel") or "unknown")
        DECISIONS.labels(
            pipeline, str(payload.get("kind")), channel, str(payload.get("status"))
        ).inc()
        opened, decided = payload.get("created_at"), payload.get("decided_at")
        if opened is not None and decided is not None:
            DECISION_SECONDS.labels(pipeline).observe((decided - opened).total_seconds())


GaugeSource = Callable[[], Iterable[Metric]]
_sources: list[GaugeSource] = []


def gauge_source(source: GaugeSource) -> GaugeSource:
    """Register a function that reads gauges of the present state (the apps do, in ready)."""
    if source not in _sources:
        _sources.append(source)
    return source


class _StateCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        for source in _sources:
            yield from source()


_state = CollectorRegistry(auto_describe=False)
_state.register(_StateCollector())


def _allowed(request: HttpRequest) -> bool:
    token = settings.FIREFLY_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    return request.META.get("REMOTE_ADDR", "") in settings.FIREFLY_METRICS_ALLOWED_ADDRESSES


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse(
            "metrics: not from an allowed address, and no valid bearer token\n",
            status=403,
            content_type="text/plain",
        )
    counted: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)  # every process sharing the directory
    body = generate_latest(counted) + generate_latest(_state)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def serve_worker_metrics() -> None:
    """In a Celery worker with FIREFLY_METRICS_PORT: serve its counters on that port."""
    port = settings.FIREFLY_METRICS_PORT
    if not port:
        return
    start_http_server(port, addr=settings.FIREFLY_METRICS_ADDRESS)
    log.info("metrics on %s:%s", settings.FIREFLY_METRICS_ADDRESS, port)
