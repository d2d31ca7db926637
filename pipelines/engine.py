"""Pure scheduling: which steps are ready or skipped, roll back sets, a run's outcome."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.spec import PipelineSpec
from pipelines.states import (
    ACTIVE,
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    REJECTED,
    SKIPPED,
    SUCCEEDED,
    StepState,
)

# The services read the current attempts through the engine's names.
from pipelines.states import latest as latest


@dataclass
class Plan:
    run: list[str] = field(default_factory=list)
    skip: dict[str, str] = field(default_factory=dict)


def _satisfied(spec: PipelineSpec, name: str, status: str) -> bool:
    """Whether a finished upstream step lets its successors go on."""
    if status in DONE:
        return True
    return status == FAILED and spec.by_name[name].on_failure == "continue"


def plan(
    spec: PipelineSpec,
    states: Mapping[str, StepState],
    outputs: Mapping[str, Any],
    candidates: Iterable[str] | None = None,
) -> Plan:
    """Decide which pending steps run now and which are skipped.

    A pending step is ready once every upstream step succeeded, was skipped, or failed
    with `on_failure: continue`. It is skipped when its `when` is false, or when all of
    its upstream steps were skipped (a branch not taken stays not taken, while a join
    runs if any branch into it ran). Skips cascade within one call.

    `candidates` limits the look to some steps (the successors of a step that just
    finished): with it, a step's commit costs the same in a long chain as in a short one.
    """
    result = Plan()
    skipped: set[str] = set()

    def status(name: str) -> str:
        return SKIPPED if name in skipped else states[name].status if name in states else PENDING

    position = spec.position
    todo = [position[name] for name in (spec.order if candidates is None else set(candidates))]
    heapq.heapify(todo)
    seen: set[int] = set()
    while todo:
        index = heapq.heappop(todo)
        if index in seen:
            continue
        seen.add(index)
        name = spec.order[index]
        if status(name) != PENDING:
            continue
        step = spec.by_name[name]
        if not all(_satisfied(spec, up, status(up)) for up in step.after):
            continue
        if step.after and all(status(up) == SKIPPED for up in step.after):
            reason = "every upstream step was skipped"
        elif step.when and not step.when.evaluate(outputs.get(step.when.step)):
            reason = f"condition not met: {step.when.describe()}"
        else:
            result.run.append(name)
            continue
        result.skip[name] = reason
        skipped.add(name)
        for below in spec.successors[name]:
            heapq.heappush(todo, position[below])
    return result


def blocked_by_failure(spec: PipelineSpec, states: Mapping[str, StepState]) -> dict[str, str]:
    """Pending steps downstream of a `skip_downstream` failure, with the reason."""
    skips: dict[str, str] = {}
    for name in spec.skipping_downstream:  # usually none: then this costs nothing
        state = states.get(name)
        if state is not None and state.status == FAILED:
            for below in spec.descendants(name):
                if states[below].status == PENDING:
                    skips.setdefault(below, f"upstream step {name!r} failed")
    return skips


def outcome(spec: PipelineSpec, states: Mapping[str, StepState]) -> str | None:
    """The run's final status once nothing can move any more, else None."""
    if any(state.status in ACTIVE for state in states.values()):
        return None
    if any(state.status == REJECTED for state in states.values()):
        return REJECTED
    failed = [
        name
        for name, state in states.items()
        if state.status == FAILED and spec.by_name[name].on_failure != "continue"
    ]
    if failed:
        return FAILED
    if any(state.status == PENDING for state in states.values()):
        return None
    if any(state.status == CANCELLED for state in states.values()):
        return CANCELLED
    return SUCCEEDED


def rollback_set(spec: PipelineSpec, to_step: str) -> set[str]:
    """The steps a roll back to `to_step` resets: it and everything downstream of it."""
    return {to_step} | spec.descendants(to_step)


def resume_set(spec: PipelineSpec, states: Mapping[str, StepState]) -> set[str]:
    """Steps a resume runs again: failed or cancelled ones and what they held back."""
    reset: set[str] = set()
    for name, state in states.items():
        if state.status in (FAILED, CANCELLED):
            reset.add(name)
            reset |= {
                below
                for below in spec.descendants(name)
                if states[below].status in (SKIPPED, CANCELLED, FAILED)
            }
    return reset


def rollback_targets(spec: PipelineSpec, step: str, states: Mapping[str, StepState]) -> list[str]:
    """Upstream steps of `step` that completed, in execution order: where a roll back may go."""
    upstream = spec.ancestors(step)
    return [name for name in spec.order if name in upstream and states[name].status == SUCCEEDED]
