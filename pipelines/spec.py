"""Parse and validate a pipeline spec (JSON or YAML) into an immutable `PipelineSpec`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from django.conf import settings

from pipelines import registry, schemas
from pipelines.callables import resolve_callable
from pipelines.errors import InvalidInput, SpecError
from pipelines.limits import bounds_problem, json_problem
from pipelines.spec_schedules import ScheduleErrors, ScheduleSpec, parse_schedules
from pipelines.spec_text import check_bounds

ON_FAILURE = ("fail_run", "skip_downstream", "continue")
WHEN_OPERATORS = ("equals", "not_equals", "in", "not_in", "exists")

# A hundred years: a longer limit is a typo, and keeping forever is saying nothing.
RETENTION_MAX_DAYS = 36500

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"}

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "steps"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,99}$"},
        "description": {"type": "string"},
        "input_schema": {"type": "object"},
        "output": {"type": "array", "items": _NAME},
        "on_finish": {"type": "string", "minLength": 3},
        "steps": {"type": "array", "minItems": 1},
        # Runs that start on a clock (pipelines/spec_schedules.py; the schedules app).
        "schedules": {"type": "array"},
        "retention": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "outputs_days": {"type": "integer", "minimum": 1, "maximum": RETENTION_MAX_DAYS},
                "runs_days": {"type": "integer", "minimum": 1, "maximum": RETENTION_MAX_DAYS},
            },
        },
    },
}

STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "type"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "type": {"type": "string"},
        "after": {"type": "array", "items": {"type": "string"}},
        "config": {"type": "object"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 100},
        "retry_backoff_s": {"type": "number", "minimum": 0, "maximum": 86400},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        "on_failure": {"enum": list(ON_FAILURE)},
        # The Celery queue its execute_step messages go to (default: the default queue).
        "queue": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"},
        "when": {
            "type": "object",
            "required": ["step"],
            "additionalProperties": False,
            "properties": {
                "step": {"type": "string"},
                "path": {"type": "string"},
                **{op: {} for op in WHEN_OPERATORS},
            },
        },
    },
}

_MISSING = object()


@dataclass(frozen=True)
class When:
    """A declarative condition on one upstream step's output."""

    step: str
    path: str
    operator: str
    value: Any

    def evaluate(self, outputs: Mapping[str, Any] | None) -> bool:
        found: Any = outputs if outputs is not None else _MISSING
        for part in filter(None, self.path.split(".")):
            found = found.get(part, _MISSING) if isinstance(found, Mapping) else _MISSING
        if self.operator == "exists":
            return (found is not _MISSING) == bool(self.value)
        if found is _MISSING:
            return self.operator in ("not_equals", "not_in")
        return {
            "equals": lambda: found == self.value,
            "not_equals": lambda: found != self.value,
            "in": lambda: found in self.value,
            "not_in": lambda: found not in self.value,
        }[self.operator]()

    def describe(self) -> str:
        target = f"{self.step}.{self.path}" if self.path else self.step
        return f"{target} {self.operator} {json.dumps(self.value)}"


@dataclass(frozen=True)
class StepSpec:
    name: str
    type: str
    after: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    retries: int = 0
    retry_backoff_s: float = 1.0
    timeout_s: float | None = None
    on_failure: str = "fail_run"
    when: When | None = None
    queue: str = ""  # "" = Celery's default queue

    @property
    def interactive(self) -> bool:
        return registry.get(self.type).interactive

    def backoff_s(self, attempt: int) -> float:
        """Delay before attempt `attempt + 1`: exponential from `retry_backoff_s`."""
        return float(self.retry_backoff_s * (2 ** (attempt - 1)))


@dataclass(frozen=True)
class Retention:
    """How long a finished run keeps its data (`outputs_days`) and itself (`runs_days`).

    None: the setting's default (FIREFLY_RETENTION_OUTPUTS_DAYS, _RUNS_DAYS) applies.
    """

    outputs_days: int | None = None
    runs_days: int | None = None


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    steps: tuple[StepSpec, ...]
    description: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    output: tuple[str, ...] = ()
    on_finish: str = ""
    retention: Retention = field(default_factory=Retention)
    schedules: tuple[ScheduleSpec, ...] = ()

    @cached_property
    def by_name(self) -> dict[str, StepSpec]:
        return {step.name: step for step in self.steps}

    @cached_property
    def successors(self) -> dict[str, tuple[str, ...]]:
        found: dict[str, list[str]] = {step.name: [] for step in self.steps}
        for step in self.steps:
            for upstream in step.after:
                found[upstream].append(step.name)
        return {name: tuple(names) for name, names in found.items()}

    @cached_property
    def when_inputs(self) -> frozenset[str]:
        """Steps whose outputs some `when` condition reads."""
        return frozenset(step.when.step for step in self.steps if step.when)

    @cached_property
    def skipping_downstream(self) -> tuple[str, ...]:
        """Steps whose failure skips everything below them (`on_failure: skip_downstream`)."""
        return tuple(step.name for step in self.steps if step.on_failure == "skip_downstream")

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Step names in a topological order (upstream before downstream)."""
        return tuple(_toposort(self.steps))

    @cached_property
    def position(self) -> dict[str, int]:
        """Each step's index in `order`."""
        return {name: index for index, name in enumerate(self.order)}

    @cached_property
    def terminal(self) -> tuple[str, ...]:
        return tuple(name for name in self.order if not self.successors[name])

    def descendants(self, name: str) -> set[str]:
        found: set[str] = set()
        todo = list(self.successors[name])
        while todo:
            step = todo.pop()
            if step not in found:
                found.add(step)
                todo.extend(self.successors[step])
        return found

    def ancestors(self, name: str) -> set[str]:
        found: set[str] = set()
        todo = list(self.by_name[name].after)
        while todo:
            step = todo.pop()
            if step not in found:
                found.add(step)
                todo.extend(self.by_name[step].after)
        return found


def _toposort(steps: tuple[StepSpec, ...]) -> list[str]:
    remaining = {step.name: set(step.after) for step in steps}
    ordered: list[str] = []
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        if not ready:
            raise ValueError("cycle")
        for name in ready:
            ordered.append(name)
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return ordered


def _find_cycle(after: Mapping[str, list[str]]) -> list[str] | None:
    """Return one cycle as a list of names (first name repeated at the end), if any."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        stack.append(name)
        for upstream in after.get(name, []):
            if upstream not in after:
                continue
            if state.get(upstream) == "open":
                return [*stack[stack.index(upstream) :], upstream]
            if upstream not in state and (cycle := visit(upstream)):
                return cycle
        stack.pop()
        state[name] = "done"
        return None

    for name in after:
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def _schema_errors(
    instance: Any, schema: Mapping[str, Any], *, step: str | None, prefix: str
) -> list[dict[str, Any]]:
    errors = []
    for error in schemas.errors(schema, instance):
        path = schemas.error_path(error)
        errors.append(
            {
                "step": step,
                "field": ".".join(p for p in (prefix, path) if p),
                "message": error.message,
            }
        )
    return errors


def parse_spec(data: Any) -> PipelineSpec:
    """Validate `data` and build a PipelineSpec, or raise SpecError listing every problem."""
    check_bounds(data)
    errors = _schema_errors(data, SPEC_SCHEMA, step=None, prefix="")
    if errors:
        raise SpecError(errors)

    raw_steps: list[Any] = data["steps"]
    names: set[str] = set()
    for index, raw in enumerate(raw_steps):
        name = raw.get("name") if isinstance(raw, dict) else None
        label = name if isinstance(name, str) else f"#{index + 1}"
        errors += _schema_errors(raw, STEP_SCHEMA, step=label, prefix="")
        if isinstance(name, str):
            if name in names:
                errors.append(
                    {"step": name, "field": "name", "message": f"duplicate step name {name!r}"}
                )
            names.add(name)
    if errors:
        raise SpecError(errors)

    after = {raw["name"]: list(raw.get("after", [])) for raw in raw_steps}
    for raw in raw_steps:
        step = raw["name"]
        for upstream in raw.get("after", []):
            if upstream not in names:
                errors.append(
                    {"step": step, "field": "after", "message": f"unknown step {upstream!r}"}
                )
            elif upstream == step:
                errors.append(
                    {"step": step, "field": "after", "message": "a step cannot follow itself"}
                )
        if not registry.is_registered(raw["type"]):
            errors.append(
                {
                    "step": step,
                    "field": "type",
                    "message": f"unknown step type {raw['type']!r} "
                    f"(known: {', '.join(registry.names())})",
                }
            )
            continue
        kind = registry.get(raw["type"])
        if kind.interactive and "queue" in raw:
            errors.append(
                {
                    "step": step,
                    "field": "queue",
                    "message": f"{raw['type']!r} steps wait for people and run on no queue",
                }
            )
        config = raw.get("config", {})
        config_errors = _schema_errors(config, kind.config_schema, step=step, prefix="config")
        errors += config_errors
        if kind.check and not config_errors:
            errors += [{"step": step, "field": "config", "message": m} for m in kind.check(config)]
    cycle = _find_cycle(after)
    if cycle:
        # `after` points upstream; print the cycle in execution order.
        errors.append(
            {
                "step": cycle[0],
                "field": "after",
                "message": "cycle: " + " -> ".join(reversed(cycle)),
            }
        )
    if errors:
        raise SpecError(errors)

    steps = tuple(_build_step(raw) for raw in raw_steps)
    spec = PipelineSpec(
        name=data["name"],
        description=data.get("description", ""),
        input_schema=data.get("input_schema", {}),
        steps=steps,
        output=tuple(data.get("output", [])),
        on_finish=data.get("on_finish", ""),
        # JSON Schema counts 30.0 as an integer; the limit is kept as one.
        retention=Retention(**{k: int(v) for k, v in data.get("retention", {}).items()}),
    )
    errors += _retention_errors(spec.retention)
    for step in steps:
        if step.when and step.when.step not in spec.ancestors(step.name):
            errors.append(
                {
                    "step": step.name,
                    "field": "when.step",
                    "message": f"{step.when.step!r} is not upstream of {step.name!r}",
                }
            )
    for step in steps:
        source = step.config.get("payload_from") if step.type == "handoff" else None
        if source and source not in step.after:
            errors.append(
                {
                    "step": step.name,
                    "field": "config.payload_from",
                    "message": f"{source!r} is not in the step's `after`",
                }
            )
    if spec.on_finish:
        try:
            resolve_callable(spec.on_finish)
        except ValueError as exc:
            errors.append({"step": None, "field": "on_finish", "message": str(exc)})
    for name in spec.output:
        if name not in spec.by_name:
            errors.append({"step": None, "field": "output", "message": f"unknown step {name!r}"})
    for path, message in schemas.schema_problems(spec.input_schema):
        field_name = f"input_schema.{path}" if path else "input_schema"
        errors.append({"step": None, "field": field_name, "message": message})
    # Checked against the input schema only once that schema is known to be sound.
    if not errors:
        try:
            spec = replace(
                spec, schedules=parse_schedules(data.get("schedules"), spec.input_schema)
            )
        except ScheduleErrors as exc:
            errors += exc.errors
    if errors:
        raise SpecError(errors)
    return spec


def _retention_errors(retention: Retention) -> list[dict[str, Any]]:
    """A run cannot be kept for less time than its outputs: they go with it."""
    outputs, runs = retention.outputs_days, retention.runs_days
    if outputs is not None and runs is not None and runs < outputs:
        return [
            {
                "step": None,
                "field": "retention.runs_days",
                "message": f"{runs} is less than outputs_days ({outputs}): a purged run "
                "takes its outputs with it, so runs must be kept at least as long",
            }
        ]
    return []


def _build_step(raw: dict[str, Any]) -> StepSpec:
    when = None
    if "when" in raw:
        operators = [op for op in WHEN_OPERATORS if op in raw["when"]]
        operator = operators[0] if operators else "exists"
        value = raw["when"].get(operator, True)
        when = When(
            step=raw["when"]["step"],
            path=raw["when"].get("path", ""),
            operator=operator,
            value=value,
        )
    return StepSpec(
        name=raw["name"],
        type=raw["type"],
        after=tuple(raw.get("after", [])),
        config=raw.get("config", {}),
        retries=raw.get("retries", 0),
        retry_backoff_s=raw.get("retry_backoff_s", 1.0),
        timeout_s=raw.get("timeout_s"),
        on_failure=raw.get("on_failure", "fail_run"),
        when=when,
        queue=raw.get("queue", ""),
    )


def validate_inputs(spec: PipelineSpec, inputs: Any) -> None:
    """Raise InvalidInput naming each field of `inputs` that breaks the input schema."""
    if not isinstance(inputs, dict):
        raise InvalidInput(
            "Run inputs must be a JSON object.", details=[{"field": "", "message": "not an object"}]
        )
    # First what the database cannot store (NUL, lone surrogates, NaN), which would
    # otherwise fail the INSERT (or the size check's encoding) with no name attached.
    not_json = json_problem(inputs, "Run inputs")
    if not_json:
        raise InvalidInput(not_json, details=[{"field": "", "message": not_json}])
    too_big = bounds_problem(inputs, what="Run inputs", max_bytes=settings.FIREFLY_INPUTS_MAX_BYTES)
    if too_big:
        raise InvalidInput(too_big, details=[{"field": "", "message": too_big}])
    if not spec.input_schema:
        return
    problems = schemas.field_problems(spec.input_schema, inputs)
    if problems:
        summary = "; ".join(f"{p['field'] or 'inputs'}: {p['message']}" for p in problems)
        raise InvalidInput(
            f"Inputs do not match the pipeline's input_schema: {summary}", details=problems
        )
