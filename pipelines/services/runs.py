"""Runs: start (or replay), advance, cancel, resume, roll back and fork; refusals audited."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from firefly_site import metrics
from pipelines import dispatch, engine, permissions, tracing
from pipelines.errors import (
    Conflict,
    FireflyError,
    IdempotencyKeyReused,
    NotFound,
    PermissionDenied,
)
from pipelines.models import Checkpoint, PipelineVersion, Run, StepRun
from pipelines.security import refusal_record
from pipelines.services import transitions
from pipelines.services.unit_of_work import RunTxn, locked_run, whole_transaction
from pipelines.spec import PipelineSpec, validate_inputs
from pipelines.versions import pipeline_version, version_spec

S = StepRun.Status
R = Run.Status


def run_start(
    *,
    pipeline: str,
    inputs: Any,
    actor: Any = None,
    version: int | None = None,
    idempotency_key: str = "",
    parent: Run | None = None,
    organization: Any = None,
    trigger: Mapping[str, Any] | None = None,
    advance: bool = True,
) -> Run:
    """Validate the inputs, create the run with a row per step, and queue its first steps.

    See `run_start_or_replay`, which also says whether the run is new.
    """
    run, _ = run_start_or_replay(
        pipeline=pipeline,
        inputs=inputs,
        actor=actor,
        version=version,
        idempotency_key=idempotency_key,
        parent=parent,
        organization=organization,
        trigger=trigger,
        advance=advance,
    )
    return run


def run_start_or_replay(
    *,
    pipeline: str,
    inputs: Any,
    actor: Any = None,
    version: int | None = None,
    idempotency_key: str = "",
    parent: Run | None = None,
    organization: Any = None,
    trigger: Mapping[str, Any] | None = None,
    advance: bool = True,
) -> tuple[Run, bool]:
    """Start a run as `run_start` does; returns (run, created).

    The pipeline is the one of that name in `organization` (a `parent` run's own; None:
    the default organization). A person needs its starter role: a pipeline they may not
    see answers as if it did not exist, one they may only view is refused (recorded).
    An `idempotency_key` is scoped to the actor and the pipeline: the same key with the
    same request returns the run it started (created False); with another request it is
    refused (`IdempotencyKeyReused`), never answered with a run the request did not ask
    for. A `parent` run (a handoff) shares its trace. A `trigger` (what started the run
    when no person did: an inbound hook, a schedule) is kept in the `run.created` entry.
    The first steps are queued (or their tasks opened) in the starting transaction, their
    messages sent as it commits: no worker has to take an `advance_run` first. Without
    `advance` (a fork's copy, a test that steps through) the run stays pending until
    `advance_run`.
    """
    found = pipeline_version(
        pipeline, version, organization=parent.organization_id if parent else organization
    )
    org_id = found.organization_id
    # A handoff's child is started by Firefly for the parent's spec (its author chose the
    # target, in the same organization); the parent's starter is recorded, not checked.
    asking = None if parent is not None else actor
    if not permissions.allowed(asking, "view_pipeline", found.pipeline):
        raise NotFound(f"No pipeline {pipeline!r}.")
    if not permissions.allowed(asking, "start_run", found.pipeline):
        reason = f"You may view pipeline {pipeline!r} but not start its runs (starter role)."
        refusal_record(
            event="run.start_refused",
            reason=reason,
            actor=actor,
            organization=org_id,
            pipeline=pipeline,
        )
        raise PermissionDenied(reason)
    return _start(
        found, pipeline, inputs, actor, version, idempotency_key, parent, trigger, advance
    )


@transaction.atomic
def _start(
    pipeline_version_: PipelineVersion,
    pipeline: str,
    inputs: Any,
    actor: Any,
    version: int | None,
    idempotency_key: str,
    parent: Run | None,
    trigger: Mapping[str, Any] | None = None,
    advance: bool = False,
) -> tuple[Run, bool]:
    request_hash = _request_hash(pipeline, version, inputs) if idempotency_key else ""
    scope = {
        "organization_id": pipeline_version_.organization_id,
        "created_by": actor,
        "idempotency_scope": pipeline,
        "idempotency_key": idempotency_key,
    }
    if idempotency_key:
        first = Run.objects.filter(**scope).first()
        if first is not None:
            return _replay(first, request_hash, idempotency_key), False
    spec = version_spec(pipeline_version_.pk)
    validate_inputs(spec, inputs)
    run = Run(
        organization_id=pipeline_version_.organization_id,
        pipeline_version=pipeline_version_,
        inputs=inputs,
        created_by=actor,
        idempotency_key=idempotency_key,
        idempotency_scope=pipeline if idempotency_key else "",
        request_hash=request_hash,
        parent=parent,
        trace_id=parent.trace_id if parent and parent.trace_id else tracing.new_trace_id(),
    )
    if idempotency_key:
        try:
            # A savepoint: a concurrent start with the same key waits on the unique index
            # until the other commits, then fails here and returns the other's run.
            with transaction.atomic():
                run.save(force_insert=True)
        except IntegrityError:
            return _replay(Run.objects.get(**scope), request_hash, idempotency_key), False
    else:
        run.save(force_insert=True)  # nothing to race for: no savepoint's round trips
    steps = _step_rows(run, dict.fromkeys(spec.order))
    txn = RunTxn(run, actor)
    txn.audit(
        "run.created",
        status=R.PENDING,
        inputs=inputs,
        data={
            "pipeline": pipeline_version_.pipeline.name,
            "version": pipeline_version_.number,
            **({"parent_run": parent.pk} if parent else {}),
            **({"trigger": dict(trigger)} if trigger else {}),
        },
    )
    if advance:
        # The new run is this transaction's alone: no other writer can hold its lock.
        # Its steps are created first, as the engine reads their states by id. What the
        # engine does next is Firefly's, as a worker's would be, not the starter's.
        StepRun.objects.bulk_create(steps)
        txn.actor = None
        transitions.progress(txn)
    else:
        # Nothing reads the new steps' ids: they are written with the audit entry.
        txn.inserts.extend(steps)
        dispatch.advance_run(run.pk)
    metrics.after_commit(metrics.RUNS_STARTED, pipeline=pipeline_version_.pipeline.name)
    # Last: when this is the whole transaction, the writes' round trip also commits it.
    txn.flush(commit=whole_transaction())
    return run, True


def _request_hash(pipeline: str, version: int | None, inputs: Any) -> str:
    request = {"pipeline": pipeline, "version": version, "inputs": inputs}
    encoded = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _replay(first: Run, request_hash: str, key: str) -> Run:
    if first.request_hash != request_hash:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was used for run {first.pk} with a different request; "
            "use a new key for a new request.",
            details=[{"field": "Idempotency-Key", "message": f"already used for run {first.pk}"}],
        )
    return first


def _create_steps(run: Run, rows: Mapping[str, StepRun | None]) -> None:
    """Create the first row of each step: pending, or a copy of a finished attempt (fork)."""
    StepRun.objects.bulk_create(_step_rows(run, rows))


def _step_rows(run: Run, rows: Mapping[str, StepRun | None]) -> list[StepRun]:
    """The first row of each step, unsaved: pending, or a copy of a finished attempt."""
    return [
        StepRun(
            organization_id=run.organization_id,
            run=run,
            step_name=name,
            generation=1,
            attempt=1,
            status=S.PENDING,
        )
        if source is None
        else StepRun(
            organization_id=run.organization_id,
            run=run,
            step_name=name,
            generation=1,
            attempt=1,
            status=source.status,
            outputs=source.outputs,
            error=source.error,
            started_at=source.started_at,
            finished_at=source.finished_at,
            inputs={"forked_from_step_run": source.pk},
        )
        for name, source in rows.items()
    ]


def run_advance(*, run_id: int) -> None:
    """Queue whatever is ready; a no-op for a finished run (safe to call any time)."""
    with locked_run(run_id) as txn:
        if not txn.run.is_finished:
            transitions.progress(txn)


def run_cancel(*, run_id: int, actor: Any = None) -> Run:
    """Cancel a run; outcomes of its steps still running are dropped when they arrive."""
    with locked_run(run_id, actor) as txn:
        refusal = refuse_operation(txn, "cancel")
        if refusal is None:
            if txn.run.is_finished:
                raise Conflict(f"Run {run_id} is already {txn.run.status}; it cannot be cancelled.")
            txn.audit("run.cancelled", status=R.CANCELLED)
            transitions.finish(txn, R.CANCELLED)
    if refusal is not None:
        raise refusal
    return txn.run


def run_resume(*, run_id: int, actor: Any = None) -> Run:
    """Run a failed run again from its last checkpoint: completed steps are kept."""
    with locked_run(run_id, actor) as txn:
        run = txn.run
        refusal = refuse_operation(txn, "resume")
        if refusal is not None:
            pass
        elif run.status != R.FAILED:
            raise Conflict(f"Run {run_id} is {run.status}; only a failed run can be resumed.")
        elif run.redacted_at is not None:
            raise Conflict(f"Run {run_id}'s data was erased: it cannot be resumed.")
        elif run.checkpoint_seq == 0:
            raise Conflict(f"Run {run_id} has no checkpoint to resume from.")
        else:
            reset = sorted(engine.resume_set(txn.spec, txn.states), key=txn.spec.order.index)
            txn.add_attempts(reset, status=S.PENDING, generation=run.generation)
            txn.set_run(status=R.RUNNING, error="", finished_at=None, output=None)
            txn.checkpoint(Checkpoint.Kind.RESUME, data={"steps": reset})
            txn.audit("run.resumed", status=R.RUNNING, data={"steps": reset})
            transitions.progress(txn)
    if refusal is not None:
        raise refusal
    return txn.run


def refuse_operation(txn: RunTxn, verb: str) -> FireflyError | None:
    """The refusal, audited in the run's chain, when `txn.actor` may not `verb` the run.

    Someone who may not even see the run is told it does not exist (404), so ids do not
    leak; the attempt is in the run's chain all the same. The caller lets the
    transaction commit (the audit entry is the evidence) and raises the refusal after it.
    """
    if permissions.may_operate(txn.actor, txn.run):
        return None
    what = "acknowledge its handoffs" if verb == "acknowledge" else f"{verb} it"
    refusal: FireflyError = PermissionDenied(
        f"Only the run's starter, its pipeline's operators and the organization's admins"
        f" may {what}."
    )
    if not permissions.allowed(txn.actor, "view_run", txn.run):
        refusal = NotFound(f"No run {txn.run.pk}.")
    person = permissions.is_person(txn.actor)
    txn.audit(
        "run.refused",
        actor=txn.actor if person else None,
        status=txn.run.status,
        error_message=str(refusal),
        data={"action": verb, **({} if person else {"actor": "anonymous"})},
    )
    return refusal


def run_rollback(
    *, run_id: int, to_step: str, actor: Any = None, comment: str = "", origin: str = ""
) -> Run:
    """Reset `to_step` and everything downstream in a new generation and run from there."""
    with locked_run(run_id, actor) as txn:
        transitions.rollback(txn, to_step, comment=comment, origin=origin)
    return txn.run


def run_fork(*, run_id: int, checkpoint_seq: int, actor: Any = None) -> Run:
    """Start a new run from the state of `run_id` at one of its checkpoints.

    Only staff and the run's starter may fork it (refusals are audited on the source
    run). A fork never carries a human decision over: a step that waited for a person
    (or for another run) starts fresh, and so does everything below it, so a fork from
    after an approval asks for the approval again.
    """
    source = Run.objects.select_related("pipeline_version__pipeline").filter(pk=run_id).first()
    if source is None:
        raise NotFound(f"No run {run_id}.")
    if not permissions.may_operate(actor, source):
        with locked_run(run_id, actor) as txn:
            refusal = refuse_operation(txn, "fork")
        raise refusal  # type: ignore[misc]
    if source.redacted_at is not None:
        raise Conflict(f"Run {run_id}'s data was erased: there is nothing to fork from.")
    return _fork(source, checkpoint_seq, actor)


@transaction.atomic
def _fork(source: Run, checkpoint_seq: int, actor: Any) -> Run:
    checkpoints = list(source.checkpoints.filter(seq__lte=checkpoint_seq).order_by("seq"))
    if not checkpoints or checkpoints[-1].seq != checkpoint_seq:
        raise NotFound(f"Run {source.pk} has no checkpoint {checkpoint_seq}.")
    spec = version_spec(source.pipeline_version_id)
    done = checkpoint_state(checkpoints)
    redo = decided_elsewhere(spec, done, checkpoints)
    done = {name: step_run_id for name, step_run_id in done.items() if name not in redo}
    sources = StepRun.objects.in_bulk(done.values())
    run = Run.objects.create(
        organization_id=source.organization_id,
        pipeline_version=source.pipeline_version,
        inputs=source.inputs,
        created_by=actor,
        forked_from=source,
        forked_from_seq=checkpoint_seq,
        trace_id=tracing.new_trace_id(),
    )
    _create_steps(
        run, {name: sources.get(done[name]) if name in done else None for name in spec.order}
    )
    txn = RunTxn(run, actor)
    kept, redone = sorted(done), sorted(redo, key=spec.order.index)
    txn.checkpoint(
        Checkpoint.Kind.FORK,
        data={"run": source.pk, "seq": checkpoint_seq, "steps": kept, "redo": redone},
    )
    txn.audit(
        "run.created",
        status=R.PENDING,
        inputs=source.inputs,
        data={
            "forked_from": source.pk,
            "checkpoint": checkpoint_seq,
            "kept": kept,
            "redo": redone,
        },
    )
    txn.flush()
    dispatch.advance_run(run.pk)
    return run


def decided_elsewhere(
    spec: PipelineSpec, done: Mapping[str, int], checkpoints: list[Checkpoint]
) -> set[str]:
    """Completed steps a fork must not keep: those a decision outside the run completed
    (an interactive step, a Pause, a handoff that waited), and every step below them."""
    waited = {c.step_run_id for c in checkpoints if c.kind == Checkpoint.Kind.STEP and c.paused}
    decided = [
        name
        for name, step_run_id in done.items()
        if spec.by_name[name].interactive or step_run_id in waited
    ]
    return set().union(*(engine.rollback_set(spec, name) for name in decided))


def checkpoint_state(checkpoints: list[Checkpoint]) -> dict[str, int]:
    """Fold checkpoints (in order) into {step: step_run_id} of the steps completed by then."""
    done: dict[str, int] = {}
    for checkpoint in checkpoints:
        if checkpoint.kind == Checkpoint.Kind.STEP and checkpoint.status in (
            S.SUCCEEDED,
            S.SKIPPED,
        ):
            done[checkpoint.step_name] = checkpoint.step_run_id  # type: ignore[assignment]
        elif checkpoint.kind == Checkpoint.Kind.STEP:
            done.pop(checkpoint.step_name, None)
        elif checkpoint.kind in (Checkpoint.Kind.ROLLBACK, Checkpoint.Kind.RESUME):
            for name in (checkpoint.data or {}).get(
                "reset", (checkpoint.data or {}).get("steps", [])
            ):
                done.pop(name, None)
        elif checkpoint.kind == Checkpoint.Kind.FORK:
            done.clear()
    return done
