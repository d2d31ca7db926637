"""The run's transitions over a locked run: start, wait, resolve, fail, roll back, finish, close."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

from pipelines import dispatch, engine, registry, tracing
from pipelines.errors import Conflict, InvalidInput
from pipelines.models import Checkpoint, Run, StepRun
from pipelines.services.hooks import cancel_hooks
from pipelines.services.unit_of_work import RunTxn
from pipelines.spec import StepSpec

S = StepRun.Status
R = Run.Status


def step_event(
    txn: RunTxn,
    event: str,
    name: str,
    status: str,
    outputs: Any = None,
    error: str = "",
    **extra: Any,
) -> None:
    """A step's outcome for event hooks (step.succeeded, step.failed, step.waiting)."""
    txn.emit(event, step=name, status=status, outputs=outputs, error=error, **extra)


def progress(
    txn: RunTxn, *, inline_from: StepSpec | None = None, after: str | None = None
) -> StepRun | None:
    """Move the run on: skip, queue or open ready steps; finish it when nothing is left.

    `after` names the step that just succeeded: only its successors can have become
    ready. `inline_from` is the step the calling worker just ran: when exactly one
    automatic step is ready, and it goes to the same queue, it is started here and
    returned for that worker to run at once (no broker round trip).
    """
    if txn.run.is_finishing:
        return None  # the steps are done; on_finish ends the run
    spec, states, now = txn.spec, txn.states, txn.now
    when_steps = spec.when_inputs
    candidates = spec.successors[after] if after else None
    plan = engine.plan(spec, states, txn.outputs(when_steps) if when_steps else {}, candidates)
    skips = {**engine.blocked_by_failure(spec, states), **plan.skip}
    for name, reason in skips.items():
        txn.set_steps([name], S.SKIPPED, finished_at=now, error=reason)
        txn.audit("step.skipped", step_name=name, status=S.SKIPPED, data={"reason": reason})
        txn.checkpoint(
            Checkpoint.Kind.STEP, step_name=name, step_run_id=states[name].id, status=S.SKIPPED
        )
    if skips:
        # A skip can make steps below it ready (or skipped) in turn.
        plan = engine.plan(spec, states, txn.outputs(when_steps) if when_steps else {})

    automatic = [name for name in plan.run if not spec.by_name[name].interactive]
    for name in plan.run:
        if spec.by_name[name].interactive:
            wait_for_person(txn, name)

    inline = None
    if (
        inline_from is not None
        and len(automatic) == 1
        and spec.by_name[automatic[0]].queue == inline_from.queue
    ):
        inline = start_step(txn, automatic[0])
    elif automatic:
        txn.set_steps(automatic, S.QUEUED, queued_at=now)
        dispatch.execute_steps([(states[name].id, spec.by_name[name].queue) for name in automatic])

    # With a step just queued or started, the run is neither over nor only waiting:
    # a long chain then skips the two scans of every step below.
    outcome = None if automatic else engine.outcome(spec, states)
    if outcome is not None:
        finish(txn, outcome)
        return inline
    if txn.run.started_at is None:
        txn.set_run(started_at=now)
        txn.audit("run.started", status=R.RUNNING)
    status = R.WAITING if not automatic and _only_waiting(states) else R.RUNNING
    if txn.run.status != status:
        txn.set_run(status=status)
    return inline


def _only_waiting(states: Mapping[str, engine.StepState]) -> bool:
    statuses = {state.status for state in states.values()}
    return S.WAITING in statuses and not statuses & {S.QUEUED, S.RUNNING}


def start_step(txn: RunTxn, name: str) -> StepRun:
    """Move a ready step to running, for this worker to run once this commits."""
    lease_until = txn.now + timedelta(seconds=settings.FIREFLY_STEP_LEASE_S)
    state = txn.states[name]
    txn.set_steps([name], S.RUNNING, started_at=txn.now, lease_until=lease_until)
    txn.emit("step.started", step=name, status=S.RUNNING, attempt=state.attempt)
    return StepRun(
        id=state.id,
        run=txn.run,
        step_name=name,
        generation=state.generation,
        attempt=state.attempt,
        status=S.RUNNING,
        started_at=txn.now,
        lease_until=lease_until,
    )


def wait_for_person(txn: RunTxn, name: str) -> None:
    step = txn.spec.by_name[name]
    txn.set_steps([name], S.WAITING, started_at=txn.now)
    step_run = StepRun.objects.get(pk=txn.states[name].id)
    step_run.status, step_run.started_at = S.WAITING, txn.now  # flushed with the batch
    kind = registry.get(step.type)
    if kind.on_wait:
        kind.on_wait(txn=txn, step_run=step_run, step=step)
    txn.audit("step.waiting", step_name=name, status=S.WAITING, started_at=txn.now)
    step_event(txn, "step.waiting", name, S.WAITING)
    txn.checkpoint(
        Checkpoint.Kind.STEP,
        step_name=name,
        step_run_id=step_run.pk,
        status=S.WAITING,
        paused=True,
    )


def cancel_active(txn: RunTxn, names: list[str]) -> list[str]:
    """Cancel those of `names` that are queued, running or waiting; returns them."""
    states = txn.states
    active = [name for name in names if states[name].status in engine.ACTIVE]
    waiting = [states[name].id for name in active if states[name].status == S.WAITING]
    if active:
        txn.set_steps(active, S.CANCELLED, finished_at=txn.now, lease_until=None)
    if waiting:
        for hook in cancel_hooks:
            hook(txn=txn, step_run_ids=waiting)
    return active


def resolve_waiting(
    txn: RunTxn, name: str, *, status: str, outputs: Any = None, error: str = ""
) -> None:
    """A person decided a waiting step: it succeeds (and the run moves on) or is rejected."""
    state = txn.states[name]
    if state.status != S.WAITING:
        raise Conflict(f"Step {name!r} is {state.status}, not waiting.")
    txn.set_steps([name], status, outputs=outputs, error=error, finished_at=txn.now)
    txn.audit(
        f"step.{status}",
        step_name=name,
        status=status,
        outputs=outputs,
        error_message=error,
        completed_at=txn.now,
    )
    if status == S.SUCCEEDED:
        step_event(txn, "step.succeeded", name, status, outputs, error)
    txn.checkpoint(Checkpoint.Kind.STEP, step_name=name, step_run_id=state.id, status=status)
    if status == S.REJECTED:
        finish(
            txn, R.REJECTED, error=f"step {name!r} was rejected" + (f": {error}" if error else "")
        )
    else:
        progress(txn, after=name)


def fail_waiting(txn: RunTxn, name: str, error: str) -> None:
    """A waiting step failed (its child run did): retries and on_failure apply."""
    state = txn.states[name]
    if state.status != S.WAITING:
        raise Conflict(f"Step {name!r} is {state.status}, not waiting.")
    txn.set_steps([name], S.FAILED, error=error, finished_at=txn.now)
    step_failed(txn, name, error=error, fields={"completed_at": txn.now})


def step_failed(
    txn: RunTxn,
    name: str,
    *,
    error: str,
    fields: dict[str, Any] | None = None,
    inline_from: StepSpec | None = None,
    lost: bool = False,
) -> StepRun | None:
    """What a failed attempt leads to: the one rule for every way a step fails.

    A handler's error, a timeout, a refused or failed handoff and a lost worker
    (`lost`) alike: the attempt, already marked failed, is audited; another attempt is
    queued while retries are left (a lost worker gets FIREFLY_LOST_WORKER_RETRIES
    more); then `on_failure` decides: `fail_run` ends the run failed, `skip_downstream`
    and `continue` let the engine skip or run what is below. `fields` are the
    attempt's audit fields (times, `data`); `inline_from` lets this worker run a lone
    ready successor (see `progress`). Returns that successor, if any.
    """
    state = txn.states[name]
    spec_step = txn.spec.by_name[name]
    fields = dict(fields or {})
    if lost:
        # Counted, not taken from the attempt number: a resume adds attempts as well.
        attempts = StepRun.objects.filter(
            run_id=txn.run.pk, step_name=name, generation=state.generation
        ).count()
        retry = attempts < spec_step.retries + 1 + settings.FIREFLY_LOST_WORKER_RETRIES
        delay = 0.0
        txn.audit(
            "step.lost",
            step_name=name,
            status=S.FAILED,
            error_message=error,
            data={"attempt": state.attempt, "retrying": retry},
        )
        # Hooks and webhooks hear of a lost worker as of any other failure.
        step_event(txn, "step.failed", name, S.FAILED, error=error, lost=True)
        run_error = f"step {name!r} lost its worker {attempts} times"
    else:
        retry = state.attempt <= spec_step.retries and state.generation == txn.run.generation
        delay = spec_step.backoff_s(state.attempt) if retry else 0.0
        data = {**(fields.pop("data", None) or {}), "attempt": state.attempt}
        if retry:
            data["retry_in_s"] = delay
        txn.audit(
            "step.failed",
            step_name=name,
            status=S.FAILED,
            error_message=error,
            data=data,
            **fields,
        )
        step_event(txn, "step.failed", name, S.FAILED, error=error)
        reason = error.splitlines()[-1] if error else "no error message"
        run_error = f"step {name!r} failed: {reason}"
    if retry:
        (again,) = txn.add_attempts(
            [name],
            status=S.QUEUED,
            generation=state.generation,
            queued_at=txn.now + timedelta(seconds=delay),
        )
        dispatch.execute_steps([(again.pk, spec_step.queue)], countdown=delay)
        return None
    txn.checkpoint(Checkpoint.Kind.STEP, step_name=name, step_run_id=state.id, status=S.FAILED)
    if spec_step.on_failure == "fail_run":
        finish(txn, R.FAILED, error=run_error)
        return None
    return progress(txn, inline_from=inline_from)


def rollback(txn: RunTxn, to_step: str, *, comment: str = "", origin: str = "") -> list[str]:
    """Reset `to_step` and everything below it in a new generation; returns the reset steps."""
    run, spec = txn.run, txn.spec
    if run.status not in (R.RUNNING, R.WAITING, R.FAILED):
        raise Conflict(f"Run {run.pk} is {run.status}; it cannot be rolled back.")
    if run.is_finishing:
        raise Conflict(f"Run {run.pk} is finishing (on_finish is running); no roll back now.")
    if to_step not in spec.by_name:
        raise InvalidInput(
            f"Unknown step {to_step!r}.",
            details=[{"field": "to_step", "message": f"unknown step {to_step!r}"}],
        )
    if txn.states[to_step].status != S.SUCCEEDED:
        raise InvalidInput(
            f"Step {to_step!r} has not completed; a run rolls back only to a completed step.",
            details=[{"field": "to_step", "message": "not a completed step"}],
        )
    reset = sorted(engine.rollback_set(spec, to_step), key=spec.order.index)
    cancelled = cancel_active(txn, reset)
    # Rows that never ran are superseded by the new generation's: close them too.
    superseded = [name for name in reset if txn.states[name].status == S.PENDING]
    if superseded:
        txn.set_steps(superseded, S.CANCELLED, finished_at=txn.now)
    generation = run.generation + 1
    txn.set_run(generation=generation, status=R.RUNNING, error="", finished_at=None)
    by = txn.actor.get_username() if txn.actor else "system"
    rolled = {"to_step": to_step, "comment": comment, "by": by, "from_step": origin}
    txn.add_attempts(reset, status=S.PENDING, generation=generation, inputs={"rollback": rolled})
    txn.checkpoint(
        Checkpoint.Kind.ROLLBACK, step_name=to_step, data={"reset": reset, "comment": comment}
    )
    txn.audit(
        "run.rolled_back",
        step_name=to_step,
        status=R.RUNNING,
        data={
            "reset": reset,
            "cancelled": cancelled,
            "generation": generation,
            "comment": comment,
            "from_step": origin,
        },
    )
    progress(txn)
    return reset


def finish(txn: RunTxn, status: str, error: str = "") -> None:
    """The steps are done: run the spec's on_finish first (unless cancelled), then close."""
    output = None
    if status == R.SUCCEEDED:
        output = txn.outputs(set(txn.spec.output or txn.spec.terminal))
    if status in (R.CANCELLED, R.FAILED, R.REJECTED):
        cancel_active(txn, list(txn.states))
    if status == R.CANCELLED:
        pending = [name for name, st in txn.states.items() if st.status == S.PENDING]
        if pending:
            txn.set_steps(pending, S.CANCELLED, finished_at=txn.now)
    if txn.spec.on_finish and status != R.CANCELLED and not txn.run.is_finishing:
        # The run stays running until on_finish (services.finishing) has run.
        txn.set_run(
            status=R.RUNNING,
            finishing=status,
            output=output,
            error=error,
            finish_lease_until=None,
            finish_attempts=0,
            disposition=None,
        )
        txn.audit(
            "run.finishing",
            status=R.RUNNING,
            outputs=output,
            error_message=error,
            data={"outcome": status, "on_finish": txn.spec.on_finish},
        )
        dispatch.finish_run(txn.run.pk)
        return
    close(txn, status, output=output, error=error)


def close(txn: RunTxn, status: str, *, output: Any, error: str = "") -> None:
    """End the run for good: its final status, output and audit entry."""
    txn.set_run(
        status=status,
        finished_at=txn.now,
        output=output,
        error=error,
        finishing="",
        finish_lease_until=None,
    )
    if txn.run.parent_id:
        # A parent step may be waiting for this run; it is told once this commits.
        dispatch.settle_handoff(txn.run.pk)
    if tracing.enabled():
        run, pipeline = txn.run, txn.version.pipeline_name
        transaction.on_commit(lambda: tracing.record_run(run, pipeline))
    ended = {"version": txn.version.number, "status": status, "error": error, "output": output}
    txn.emit("run.finished", **ended)
    if status == R.FAILED:
        txn.emit("run.failed", **ended)
    txn.audit(
        "run.finished",
        status=status,
        outputs=output,
        error_message=error,
        started_at=txn.run.started_at,
        completed_at=txn.now,
    )
