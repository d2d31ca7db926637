"""Calling a step's handler: its context (inputs, and the upstream outputs read only when
asked), the record of what it consumed, its timeout, and the outcome it leaves."""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from firefly_site import metrics
from pipelines import registry, tracing
from pipelines.canonical import json_default, numbers
from pipelines.context import Handoff, Pause, StepContext
from pipelines.leases import leases
from pipelines.limits import json_problem
from pipelines.models import StepRun
from pipelines.versions import version_spec

log = logging.getLogger(__name__)

S = StepRun.Status


@dataclass
class Outcome:
    outputs: dict[str, Any] | None = None
    error: str = ""
    pause: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # A step that hands work to another pipeline (opened when this outcome commits).
    handoff: Handoff | None = None
    # The child run a waiting step waits for (no human task is opened for it).
    waits_for: int | None = None
    # The attempt's span ids, when tracing is on (kept on its audit entry).
    trace: dict[str, str] | None = None
    # What the attempt read, by reference and hash (its audit entry's `inputs`).
    consumed: dict[str, Any] | None = None


def call_handler(step: StepRun) -> Outcome:
    """Run the step's handler outside any transaction and capture what happened."""
    run = step.run
    spec = version_spec(run.pipeline_version_id)
    spec_step = spec.by_name[step.step_name]
    upstream = LazyUpstream(run.pk, spec_step.after)
    # Taken before the handler runs, which could change the dict it is given.
    inputs_sha256 = run_inputs_sha256(run.pk, run.inputs)
    ctx = StepContext(
        run_id=run.pk,
        step_name=step.step_name,
        generation=step.generation,
        attempt=step.attempt,
        inputs=run.inputs,
        upstream=upstream,
        config=spec_step.config,
        idempotency_key=f"run-{run.pk}-{step.step_name}-gen-{step.generation}",
        logger=logging.getLogger(f"firefly.step.{spec.name}.{step.step_name}"),
        extra=_step_extra(step),
        step_run_id=step.pk,
    )
    handler = registry.get(spec_step.type).handler
    assert handler is not None
    started = step.started_at or timezone.now()
    with metrics.STEP_SECONDS.labels(spec.name, spec_step.type).time():
        if tracing.enabled():
            with tracing.step_span(step, spec.name, run.trace_id) as span:
                outcome = _run_handler(handler, ctx, spec_step.timeout_s, started)
                span.finish(outcome.error)
                outcome.trace = span.ids
        else:
            outcome = _run_handler(handler, ctx, spec_step.timeout_s, started)
    outcome.consumed = consumption(inputs_sha256, upstream)
    return outcome


def sha256_of(value: Any) -> str:
    """SHA-256 of a JSON value's canonical form (sorted keys, no spaces, numbers by value as
    the audit hash takes them), so the value read back from the database gives the same."""
    encoded = json.dumps(
        numbers(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=json_default,
    )
    return hashlib.sha256(encoded.encode()).hexdigest()


# Runs' inputs never change: their digest is taken once per run and process (bounded).
_inputs_sha256: dict[int, str] = {}


def run_inputs_sha256(run_id: int, inputs: Any) -> str:
    found = _inputs_sha256.get(run_id)
    if found is None:
        found = sha256_of(inputs or {})
        if len(_inputs_sha256) >= 1024:
            _inputs_sha256.clear()
        _inputs_sha256[run_id] = found
    return found


def consumption(inputs_sha256: str, upstream: LazyUpstream) -> dict[str, Any]:
    """What a step visit read: the run's inputs and the upstream steps' outputs its handler
    was handed, named and hashed rather than copied, so the trail grows with the steps and
    not with their data.

    Upstream outputs are read only when the handler asks for them (one query for all the
    steps in `after`, as before); a handler that never does read none, and none is listed.
    Each listed upstream is the attempt whose outputs were handed over (its step run,
    generation and attempt: its `step.succeeded` entry holds those outputs), hashed when
    they were read, before the handler could change them.
    """
    return {
        "run_inputs_sha256": inputs_sha256,
        "upstream": [
            {
                "step": name,
                "step_run": ref.step_run,
                "generation": ref.generation,
                "attempt": ref.attempt,
                "outputs_sha256": ref.outputs_sha256,
            }
            for name, ref in upstream.read().items()
        ],
    }


def _run_handler(
    handler: registry.Handler, ctx: StepContext, timeout_s: float | None, started: datetime
) -> Outcome:
    leases.hold(ctx.step_run_id, ctx.cancelled)
    try:
        result = call_with_timeout(handler, ctx, timeout_s) if timeout_s else handler(ctx)
    except Exception as exc:
        log.info("step %s of run %s failed: %s", ctx.step_name, ctx.run_id, exc)
        error = "".join(traceback.format_exception_only(exc)).strip()
        return Outcome(error=error, started_at=started, finished_at=timezone.now())
    finally:
        leases.release(ctx.step_run_id)
    if isinstance(result, Pause):
        return Outcome(pause=result.reason, started_at=started, finished_at=timezone.now())
    problem = _result_problem(result)
    if problem:
        # Refused here, as the attempt's own failure: stored as it is, the value would
        # fail the outcome's commit, and the step would sit running until its lease ran
        # out and be retried as if its worker were lost.
        log.info("step %s of run %s returned no JSON: %s", ctx.step_name, ctx.run_id, problem)
        return Outcome(error=problem, started_at=started, finished_at=timezone.now())
    if isinstance(result, Handoff):
        return Outcome(handoff=result, started_at=started, finished_at=timezone.now())
    return Outcome(outputs=result, started_at=started, finished_at=timezone.now())


def _result_problem(result: Any) -> str | None:
    """Why a handler's result cannot be stored as the step's outputs, or None."""
    if isinstance(result, Handoff):
        return json_problem(result.payload, "handoff payload")
    if not isinstance(result, dict):
        return f"the step returned a {type(result).__name__}; a step returns a JSON object."
    return json_problem(result, "output")


class StepTimeout(Exception):
    pass


def call_with_timeout(handler: Callable[[Any], Any], ctx: Any, timeout_s: float) -> Any:
    # Python cannot kill a thread: on timeout the step fails and the handler is told
    # through ctx.cancelled; whatever it returns later is ignored.
    def call() -> Any:
        try:
            return handler(ctx)
        finally:
            close_old_connections()

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="firefly-step")
    try:
        # In this thread's context: the handler's log records name its run and step.
        return pool.submit(contextvars.copy_context().run, call).result(timeout=timeout_s)
    except FutureTimeout:
        ctx.cancelled.set()
        raise StepTimeout(f"step timed out after {timeout_s:g}s") from None
    finally:
        pool.shutdown(wait=False)


def _step_extra(step: StepRun) -> dict[str, Any]:
    inputs = step.inputs
    if inputs is None and step.generation > 1:
        inputs = StepRun.objects.filter(pk=step.pk).values_list("inputs", flat=True).first()
    return dict(inputs or {})


@dataclass(frozen=True)
class UpstreamRef:
    """The attempt of an upstream step whose outputs a step was handed."""

    step_run: int
    generation: int
    attempt: int
    outputs: Any
    outputs_sha256: str


class LazyUpstream(Mapping[str, Any]):
    """Outputs of a step's direct upstream steps, read from the database on first use."""

    def __init__(self, run_id: int, names: tuple[str, ...]) -> None:
        self.run_id = run_id
        self.names = names
        self._refs: dict[str, UpstreamRef] | None = None
        self._data: dict[str, Any] | None = None

    def read(self) -> dict[str, UpstreamRef]:
        """The upstream attempts handed over so far, in the spec's `after` order (none if
        the handler never asked)."""
        return self._refs or {}

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            rows = (
                StepRun.objects.filter(
                    run_id=self.run_id, step_name__in=self.names, status=S.SUCCEEDED
                )
                .order_by("generation", "attempt")
                .values_list("step_name", "pk", "generation", "attempt", "outputs")
            )
            # The latest succeeded attempt of each wins, as it always has.
            latest = {name: (pk, gen, attempt, out) for name, pk, gen, attempt, out in rows}
            self._refs = {
                name: UpstreamRef(pk, gen, attempt, out, sha256_of(out))
                for name in self.names
                if name in latest
                for pk, gen, attempt, out in [latest[name]]
            }
            self._data = {name: ref.outputs for name, ref in self._refs.items()}
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())
