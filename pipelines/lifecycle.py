"""The end of a run: on_finish and its harness, and handoffs to other pipelines.

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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

from pipelines import registry, services
from pipelines.errors import Conflict, InvalidInput, NotFound
from pipelines.models import HandoffEnvelope, Run, StepRun

R = Run.Status
S = StepRun.Status

# --- unsettled work ---------------------------------------------------------------------

# What can outlive a run, in the order the summary names it: (name, singular, plural).
KINDS = (
    ("open_tasks", "open task", "open tasks"),
    ("unacknowledged_handoffs", "unacknowledged handoff", "unacknowledged handoffs"),
    ("steps_in_flight", "step in flight", "steps in flight"),
    ("queued_webhook_deliveries", "queued webhook delivery", "queued webhook deliveries"),
)

# name -> callable(run_id) returning a list of small dicts; apps add their own.
unsettled_sources: dict[str, Callable[[int], list[dict[str, Any]]]] = {}


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


def _open_envelopes(run_id: int) -> list[dict[str, Any]]:
    return [
        {
            "id": envelope.pk,
            "pipeline": envelope.target_pipeline,
            "child_run": envelope.child_run_id,
            "step": envelope.origin_step,
            "status": envelope.status,
        }
        for envelope in HandoffEnvelope.objects.filter(
            origin_run_id=run_id, acknowledged_at__isnull=True
        ).select_related("child_run")
    ]


def _steps_in_flight(run_id: int) -> list[dict[str, Any]]:
    rows = StepRun.objects.filter(
        run_id=run_id, status__in=[S.QUEUED, S.RUNNING, S.WAITING]
    ).values("id", "step_name", "status", "attempt")
    return [
        {"id": r["id"], "step": r["step_name"], "status": r["status"], "attempt": r["attempt"]}
        for r in rows
    ]


unsettled_sources["unacknowledged_handoffs"] = _open_envelopes
unsettled_sources["steps_in_flight"] = _steps_in_flight


# --- handoffs -------------------------------------------------------------------------


def open_handoff(
    txn: services.RunTxn,
    *,
    pipeline: str,
    payload: Any,
    key: str,
    origin_step: str = "",
    origin_step_run_id: int | None = None,
    wait: bool = False,
) -> HandoffEnvelope:
    """Create an envelope and start the child run, in the origin run's transaction.

    The same key returns the envelope already opened. A target that does not exist or
    refuses the payload raises (NotFound, InvalidInput) and leaves nothing behind.
    """
    existing = HandoffEnvelope.objects.filter(origin_run_id=txn.run.pk, key=key).first()
    if existing is not None:
        return existing
    if not isinstance(payload, dict):
        raise InvalidInput(
            "A handoff payload must be a JSON object.",
            details=[{"field": "payload", "message": f"got {type(payload).__name__}"}],
        )
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"The handoff payload is not JSON: {exc}",
            details=[{"field": "payload", "message": str(exc)}],
        ) from None
    with transaction.atomic():
        child = services.run_start(
            pipeline=pipeline, inputs=payload, actor=txn.run.created_by, parent=txn.run
        )
        envelope = HandoffEnvelope.objects.create(
            origin_run=txn.run,
            origin_step=origin_step,
            origin_step_run_id=origin_step_run_id,
            key=key,
            target_pipeline=pipeline,
            payload=payload,
            wait=wait,
            child_run=child,
            queued_at=txn.now,
        )
    txn.audit(
        "handoff.queued",
        step_name=origin_step,
        inputs=payload,
        data={"envelope": envelope.pk, "pipeline": pipeline, "child_run": child.pk, "wait": wait},
    )
    return envelope


def open_step_handoff(
    txn: services.RunTxn, step: StepRun, outcome: services.Outcome
) -> services.Outcome:
    """Turn a step's Handoff into its outcome: the child started, waited for, or refused."""
    request = outcome.handoff
    assert request is not None
    try:
        envelope = open_handoff(
            txn,
            pipeline=request.pipeline,
            payload=dict(request.payload),
            key=f"step:{step.step_name}:{step.generation}:{step.attempt}",
            origin_step=step.step_name,
            origin_step_run_id=step.pk,
            wait=request.wait,
        )
    except (InvalidInput, NotFound) as exc:
        return replace(outcome, handoff=None, error=f"handoff to {request.pipeline!r}: {exc}")
    if request.wait:
        reason = f"waiting for run {envelope.child_run_id} of {request.pipeline}"
        return replace(outcome, handoff=None, pause=reason, waits_for=envelope.child_run_id)
    outputs = {"envelope": envelope.pk, "run": envelope.child_run_id, "pipeline": request.pipeline}
    return replace(outcome, handoff=None, outputs=outputs)


def handoff_settle(*, child_run_id: int) -> bool:
    """A child run ended: the step waiting for it ends as it did. True if it did now."""
    envelope = HandoffEnvelope.objects.filter(
        child_run_id=child_run_id, wait=True, acknowledged_at__isnull=True
    ).first()
    if envelope is None:
        return False
    with services.locked_run(envelope.origin_run_id) as txn:
        envelope = HandoffEnvelope.objects.get(pk=envelope.pk)
        child = Run.objects.get(pk=child_run_id)
        state = txn.states.get(envelope.origin_step)
        if (
            envelope.acknowledged_at
            or not child.is_finished
            or state is None
            or (state.id, state.status) != (envelope.origin_step_run_id, S.WAITING)
        ):
            return False
        _acknowledge(txn, envelope, {"status": child.status})
        name, what = envelope.origin_step, f"run {child.pk} of {envelope.target_pipeline}"
        if child.status == R.SUCCEEDED:
            output = child.output if isinstance(child.output, dict) else {"output": child.output}
            txn.resolve_waiting(name, status=S.SUCCEEDED, outputs=output)
        elif child.status == R.REJECTED:
            txn.resolve_waiting(name, status=S.REJECTED, error=f"{what} was rejected")
        else:
            detail = f": {child.error}" if child.error else ""
            txn.fail_waiting(name, f"{what} {child.status}{detail}")
    return True


def cancel_waiting_children(*, txn: services.RunTxn, step_run_ids: list[int]) -> None:
    """Cancel hook: steps waiting for child runs were cancelled or rolled back."""
    envelopes = HandoffEnvelope.objects.filter(
        origin_step_run_id__in=step_run_ids, wait=True, acknowledged_at__isnull=True
    ).select_related("child_run")
    for envelope in envelopes:
        child = envelope.child_run
        if child is not None and not child.is_finished:
            with suppress(Conflict):  # it ended meanwhile
                services.run_cancel(run_id=child.pk, actor=txn.actor)
        _acknowledge(
            txn,
            envelope,
            {"status": "cancelled", "reason": f"step {envelope.origin_step!r} stopped waiting"},
            actor=txn.actor,
        )


def _acknowledge(
    txn: services.RunTxn, envelope: HandoffEnvelope, decision: Any, actor: Any = None
) -> None:
    envelope.acknowledged_at, envelope.decision = txn.now, decision
    envelope.acknowledged_by = actor
    HandoffEnvelope.objects.filter(pk=envelope.pk).update(
        acknowledged_at=txn.now, decision=decision, acknowledged_by=actor
    )
    txn.audit(
        "handoff.acknowledged",
        step_name=envelope.origin_step,
        actor=actor,
        data={"envelope": envelope.pk, "child_run": envelope.child_run_id, "decision": decision},
    )


def acknowledge_handoff(*, envelope_id: int, decision: Any, actor: Any = None) -> HandoffEnvelope:
    """Record how a handoff was settled; it leaves the origin run's unsettled work."""
    found = HandoffEnvelope.objects.filter(pk=envelope_id)
    origin_run_id = found.values_list("origin_run_id", flat=True).first()
    if origin_run_id is None:
        raise NotFound(f"No handoff {envelope_id}.")
    with services.locked_run(origin_run_id, actor) as txn:
        refusal = services.refuse_operation(txn, "acknowledge")
        if refusal is None:
            if not decision or not isinstance(decision, str | dict) or not str(decision).strip():
                raise InvalidInput(
                    "A decision is a non-empty string or a non-empty JSON object.",
                    details=[{"field": "decision", "message": "a non-empty string or JSON object"}],
                )
            envelope = HandoffEnvelope.objects.select_related("acknowledged_by").get(pk=envelope_id)
            if envelope.acknowledged_at:
                by = (
                    envelope.acknowledged_by.get_username()
                    if envelope.acknowledged_by
                    else "system"
                )
                raise Conflict(
                    f"Handoff {envelope_id} was already acknowledged by {by} "
                    f"at {envelope.acknowledged_at.isoformat()}."
                )
            _acknowledge(txn, envelope, decision, actor)
    if refusal is not None:
        raise refusal
    return envelope


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

    def _locked(self) -> AbstractContextManager[services.RunTxn]:
        return _holding(self.run_id, self.attempt)


@contextmanager
def _holding(run_id: int, attempt: int) -> Iterator[services.RunTxn]:
    """The run, locked, while this attempt of on_finish still holds the finish."""
    with services.locked_run(run_id) as txn:
        if not _holds(txn, attempt):
            raise Conflict(f"Run {run_id} is no longer finishing in this attempt.")
        yield txn


def _holds(txn: services.RunTxn, attempt: int) -> bool:
    return txn.run.is_finishing and txn.run.finish_attempts == attempt


def run_finalize(*, run_id: int) -> None:
    """Run the spec's on_finish (once), then close the run (the `finish_run` task)."""
    attempt = _claim_finish(run_id)
    if attempt is None:
        return
    run = Run.objects.get(pk=run_id)
    info = services.version_info(run.pipeline_version_id)
    harness = Harness(run, info.pipeline_name, attempt)
    value = run.output
    try:
        on_finish = registry.resolve_callable(info.spec.on_finish)
        timeout = settings.FIREFLY_ON_FINISH_TIMEOUT_S
        if timeout:
            result = services._call_with_timeout(lambda h: on_finish(h, value), harness, timeout)
        else:
            result = on_finish(harness, value)
        if result is not None:
            json.dumps(result)
    except Exception as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()
        with services.locked_run(run_id) as txn:
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
            txn.close(R.FAILED, output=run.output, error=f"on_finish failed: {error}{before}")
        return
    with services.locked_run(run_id) as txn:
        if _holds(txn, attempt):
            output = txn.run.output if result is None else result
            txn.close(txn.run.finishing, output=output, error=txn.run.error)


def _claim_finish(run_id: int) -> int | None:
    """Take the finish lease; None when the run is not finishing or another worker has it."""
    with services.locked_run(run_id) as txn:
        run = txn.run
        lease = run.finish_lease_until
        if not run.is_finishing or (lease is not None and lease > txn.now):
            return None
        if run.finish_attempts >= settings.FIREFLY_ON_FINISH_ATTEMPTS:
            txn.close(
                R.FAILED,
                output=run.output,
                error=f"on_finish lost its worker {run.finish_attempts} times",
            )
            return None
        attempt = run.finish_attempts + 1
        # Longer than on_finish may take: a live worker always ends before the lease.
        until = txn.now + timedelta(seconds=settings.FIREFLY_ON_FINISH_TIMEOUT_S + 60)
        txn.set_run(finish_attempts=attempt, finish_lease_until=until)
        txn.audit(
            "run.on_finish_started",
            status=R.RUNNING,
            data={"attempt": attempt, "on_finish": txn.spec.on_finish, "outcome": run.finishing},
        )
    return attempt
