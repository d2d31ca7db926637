"""The end of a run: on_finish and its harness, and the run's unsettled work.

When a run's steps are done and its spec names `on_finish`, the run stays `running`
with `finishing` set to the outcome its steps reached, and `finish_run` is queued.
The worker that takes the finish lease (one at a time) calls
`on_finish(harness, value)` outside any transaction, then closes the run with the
returned value as its output. A redelivered or duplicate message finds the lease
held or the run closed and does nothing; if the worker dies, the reaper queues
the finish again once the lease has run out (a new, audited attempt).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings

from pipelines import registry
from pipelines.errors import Conflict, InvalidInput
from pipelines.models import HandoffEnvelope, Run, StepRun
from pipelines.services import transitions
from pipelines.services.handlers import call_with_timeout
from pipelines.services.handoffs import open_handoff
from pipelines.services.hooks import unsettled_sources
from pipelines.services.unit_of_work import RunTxn, locked_run
from pipelines.versions import version_info

R = Run.Status
S = StepRun.Status

# --- unsettled work ---------------------------------------------------------------------

# What can outlive a run, in the order the summary names it: (name, singular, plural).
KINDS = (
    ("open_tasks", "open task", "open tasks"),
    ("unacknowledged_handoffs", "unacknowledged handoff", "unacknowledged handoffs"),
    ("steps_in_flight", "step in flight", "steps in flight"),
    ("queued_webhook_deliveries", "queued webhook delivery", "queued webhook deliveries"),
    # Firings of a schedule (overlap: queue) waiting for this run to finish to start theirs.
    ("queued_triggers", "queued trigger", "queued triggers"),
)


@dataclass(frozen=True)
class Unsettled:
    """Work of a run that is not settled yet, by kind."""

    items: dict[str, list[dict[str, Any]]]

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(found) for name, found in self.items.items()}

    @property
    def summary(self) -> str:
        parts = [
            f"{len(self.items[name])} {one if len(self.items[name]) == 1 else many}"
            for name, one, many in KINDS
            if self.items.get(name)
        ]
        return ", ".join(parts) or "no unsettled work"

    def __bool__(self) -> bool:
        return any(self.items.values())

    def __str__(self) -> str:
        return self.summary


def unsettled(run_id: int) -> Unsettled:
    """A snapshot of the run's work that is not settled (a plain read)."""
    return Unsettled({name: list(source(run_id)) for name, source in unsettled_sources.items()})


def steps_in_flight(run_id: int) -> list[dict[str, Any]]:
    """Unsettled source: the run's steps queued, running or waiting."""
    rows = StepRun.objects.filter(
        run_id=run_id, status__in=[S.QUEUED, S.RUNNING, S.WAITING]
    ).values("id", "step_name", "status", "attempt")
    return [
        {"id": r["id"], "step": r["step_name"], "status": r["status"], "attempt": r["attempt"]}
        for r in rows
    ]


# --- on_finish ------------------------------------------------------------------------

_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,40}$")
DISPOSITION_LIMIT = 8 * 1024


class Harness:
    """What a spec's on_finish gets besides the run's value: its loose ends, and ways to
    settle them. Each call is its own transaction in the run's audit chain."""

    def __init__(self, run: Run, pipeline: str, attempt: int) -> None:
        self.run_id = run.pk
        self.pipeline = pipeline
        # The outcome the steps reached: succeeded, failed or rejected.
        self.status = run.finishing
        self.error = run.error
        self.inputs = run.inputs
        self.attempt = attempt
        # The envelope this run was started by, when another run handed work to it.
        self.envelope: HandoffEnvelope | None = HandoffEnvelope.objects.filter(
            child_run_id=run.pk
        ).first()
        self.cancelled = threading.Event()
        self._handoffs = 0

    def unsettled(self) -> Unsettled:
        return unsettled(self.run_id)

    def emit_audit(self, kind: str, payload: Any = None) -> int:
        """Append a `lifecycle.<kind>` entry to the run's audit chain; returns its seq."""
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise InvalidInput(
                f"Audit kind {kind!r} must be lower case letters, digits, '_', '.' or '-'.",
                details=[{"field": "kind", "message": "not a valid kind"}],
            )
        with self._locked() as txn:
            txn.audit(f"lifecycle.{kind}", data=payload)
        return txn.run.audit_seq

    def handoff_to(self, pipeline: str, payload: Any = None) -> HandoffEnvelope:
        """Start a run of `pipeline` with `payload` as its inputs (not waited for)."""
        self._handoffs += 1
        payload = {} if payload is None else payload
        digest = hashlib.sha256(
            json.dumps(payload, sort_keys=True, default=str).encode()
        ).hexdigest()
        # Stable when a lost on_finish runs again: the same call finds its envelope.
        key = f"on_finish:{self._handoffs}:{pipeline}:{digest[:16]}"
        with self._locked() as txn:
            return open_handoff(txn, pipeline=pipeline, payload=payload, key=key)

    def finalize(self, disposition: dict[str, Any]) -> dict[str, Any]:
        """Record the run's final disposition, once: a repeat returns the first."""
        if not isinstance(disposition, dict):
            raise InvalidInput(
                "A disposition is a JSON object.",
                details=[{"field": "disposition", "message": "not an object"}],
            )
        size = len(json.dumps(disposition))
        if size > DISPOSITION_LIMIT:
            raise InvalidInput(
                f"A disposition is at most {DISPOSITION_LIMIT} bytes of JSON; this is {size}.",
                details=[{"field": "disposition", "message": "too large"}],
            )
        with self._locked() as txn:
            if txn.run.disposition is not None:
                return dict(txn.run.disposition)
            txn.set_run(disposition=disposition)
            txn.audit("run.disposition", data=disposition)
        return disposition

    def _locked(self) -> AbstractContextManager[RunTxn]:
        return _holding(self.run_id, self.attempt)


@contextmanager
def _holding(run_id: int, attempt: int) -> Iterator[RunTxn]:
    """The run, locked, while this attempt of on_finish still holds the finish."""
    with locked_run(run_id) as txn:
        if not _holds(txn, attempt):
            raise Conflict(f"Run {run_id} is no longer finishing in this attempt.")
        yield txn


def _holds(txn: RunTxn, attempt: int) -> bool:
    return txn.run.is_finishing and txn.run.finish_attempts == attempt


def run_finalize(*, run_id: int) -> None:
    """Run the spec's on_finish (once), then close the run (the `finish_run` task)."""
    attempt = _claim_finish(run_id)
    if attempt is None:
        return
    run = Run.objects.get(pk=run_id)
    info = version_info(run.pipeline_version_id)
    harness = Harness(run, info.pipeline_name, attempt)
    value = run.output
    try:
        on_finish = registry.resolve_callable(info.spec.on_finish)
        timeout = settings.FIREFLY_ON_FINISH_TIMEOUT_S
        if timeout:
            result = call_with_timeout(lambda h: on_finish(h, value), harness, timeout)
        else:
            result = on_finish(harness, value)
        if result is not None:
            json.dumps(result)
    except Exception as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()
        with locked_run(run_id) as txn:
            if not _holds(txn, attempt):
                return
            txn.audit(
                "run.on_finish_failed",
                status=R.FAILED,
                error_message=error,
                data={"attempt": attempt, "on_finish": info.spec.on_finish},
            )
            run = txn.run
            before = f" (the steps had {run.finishing}: {run.error})" if run.error else ""
            transitions.close(
                txn, R.FAILED, output=run.output, error=f"on_finish failed: {error}{before}"
            )
        return
    with locked_run(run_id) as txn:
        if _holds(txn, attempt):
            output = txn.run.output if result is None else result
            transitions.close(txn, txn.run.finishing, output=output, error=txn.run.error)


def _claim_finish(run_id: int) -> int | None:
    """Take the finish lease; None when the run is not finishing or another worker has it."""
    with locked_run(run_id) as txn:
        run = txn.run
        lease = run.finish_lease_until
        if not run.is_finishing or (lease is not None and lease > txn.now):
            return None
        if run.finish_attempts >= settings.FIREFLY_ON_FINISH_ATTEMPTS:
            transitions.close(
                txn,
                R.FAILED,
                output=run.output,
                error=f"on_finish lost its worker {run.finish_attempts} times",
            )
            return None
        attempt = run.finish_attempts + 1
        # Longer than on_finish may take (its timeout and a step's lease on top): a live
        # worker always ends before the lease.
        margin = settings.FIREFLY_ON_FINISH_TIMEOUT_S + settings.FIREFLY_STEP_LEASE_S
        until = txn.now + timedelta(seconds=margin)
        txn.set_run(finish_attempts=attempt, finish_lease_until=until)
        txn.audit(
            "run.on_finish_started",
            status=R.RUNNING,
            data={"attempt": attempt, "on_finish": txn.spec.on_finish, "outcome": run.finishing},
        )
    return attempt
