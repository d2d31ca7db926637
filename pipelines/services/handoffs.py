"""Handoffs to other pipelines: envelopes opened, settled by the child run, acknowledged."""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Any

from django.db import transaction

from pipelines.context import Handoff
from pipelines.errors import Conflict, InvalidInput, NotFound
from pipelines.models import HandoffEnvelope, Run, StepRun
from pipelines.services import transitions
from pipelines.services.runs import refuse_operation, run_cancel, run_start
from pipelines.services.unit_of_work import RunTxn, locked_run

R = Run.Status
S = StepRun.Status


def open_handoff(
    txn: RunTxn,
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
        child = run_start(
            pipeline=pipeline, inputs=payload, actor=txn.run.created_by, parent=txn.run
        )
        envelope = HandoffEnvelope.objects.create(
            organization_id=txn.run.organization_id,
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


def open_step_handoff(txn: RunTxn, step: StepRun, request: Handoff) -> HandoffEnvelope | str:
    """Open the handoff a step's handler returned: its envelope, or why it was refused.

    A refusal is the attempt's failure (retries and on_failure apply), not an error of
    the transaction.
    """
    try:
        return open_handoff(
            txn,
            pipeline=request.pipeline,
            payload=dict(request.payload),
            key=f"step:{step.step_name}:{step.generation}:{step.attempt}",
            origin_step=step.step_name,
            origin_step_run_id=step.pk,
            wait=request.wait,
        )
    except (InvalidInput, NotFound) as exc:
        return f"handoff to {request.pipeline!r}: {exc}"


def handoff_settle(*, child_run_id: int) -> bool:
    """A child run ended: the step waiting for it ends as it did. True if it did now."""
    envelope = HandoffEnvelope.objects.filter(
        child_run_id=child_run_id, wait=True, acknowledged_at__isnull=True
    ).first()
    if envelope is None:
        return False
    with locked_run(envelope.origin_run_id) as txn:
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
            transitions.resolve_waiting(txn, name, status=S.SUCCEEDED, outputs=output)
        elif child.status == R.REJECTED:
            transitions.resolve_waiting(txn, name, status=S.REJECTED, error=f"{what} was rejected")
        else:
            detail = f": {child.error}" if child.error else ""
            transitions.fail_waiting(txn, name, f"{what} {child.status}{detail}")
    return True


def cancel_waiting_children(*, txn: RunTxn, step_run_ids: list[int]) -> None:
    """Cancel hook: steps waiting for child runs were cancelled or rolled back."""
    envelopes = HandoffEnvelope.objects.filter(
        origin_step_run_id__in=step_run_ids, wait=True, acknowledged_at__isnull=True
    ).select_related("child_run")
    for envelope in envelopes:
        child = envelope.child_run
        if child is not None and not child.is_finished:
            with suppress(Conflict):  # it ended meanwhile
                run_cancel(run_id=child.pk, actor=txn.actor)
        _acknowledge(
            txn,
            envelope,
            {"status": "cancelled", "reason": f"step {envelope.origin_step!r} stopped waiting"},
            actor=txn.actor,
        )


def _acknowledge(txn: RunTxn, envelope: HandoffEnvelope, decision: Any, actor: Any = None) -> None:
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
    with locked_run(origin_run_id, actor) as txn:
        refusal = refuse_operation(txn, "acknowledge") or _refuse_while_waited(txn, envelope_id)
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


def _waits_for_child(txn: RunTxn, envelope: HandoffEnvelope) -> bool:
    """A step still waits for this envelope's child run: the child's end settles it."""
    state = txn.states.get(envelope.origin_step)
    return (
        envelope.wait
        and envelope.acknowledged_at is None
        and state is not None
        and (state.id, state.status) == (envelope.origin_step_run_id, S.WAITING)
    )


def _refuse_while_waited(txn: RunTxn, envelope_id: int) -> Conflict | None:
    """No person settles a handoff a step waits on: it would leave the step waiting for a
    settle that never comes. The attempt is audited, as other refusals are."""
    envelope = HandoffEnvelope.objects.filter(pk=envelope_id).first()
    if envelope is None or not _waits_for_child(txn, envelope):
        return None
    refusal = Conflict(
        f"Handoff {envelope_id} settles when run {envelope.child_run_id} finishes: step"
        f" {envelope.origin_step!r} waits for it, so there is nothing to acknowledge yet."
    )
    txn.audit(
        "run.refused",
        step_name=envelope.origin_step,
        status=txn.run.status,
        error_message=str(refusal),
        data={"action": "acknowledge", "envelope": envelope_id, "child_run": envelope.child_run_id},
    )
    return refusal


def open_envelopes(run_id: int) -> list[dict[str, Any]]:
    """Unsettled source: the run's handoffs not acknowledged yet."""
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
