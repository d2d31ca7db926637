"""The step-type registry: what a step of each type runs, and how its config is checked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Where lifecycle and the security tests find it; it lives with the callables rule.
from pipelines.callables import resolve_callable as resolve_callable
from pipelines.context import Handoff, Pause, StepContext

Handler = Callable[[StepContext], "dict[str, Any] | Pause | Handoff"]


@dataclass(frozen=True)
class StepType:
    name: str
    config_schema: dict[str, Any]
    # An interactive step runs no handler: it waits for a person. `on_wait` is called
    # inside the transaction that moves the step to `waiting` (the approvals app opens
    # its human task there).
    interactive: bool = False
    handler: Handler | None = None
    on_wait: Callable[..., None] | None = None
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    # Extra checks of a step's config beyond its JSON Schema; returns problems.
    check: Callable[[dict[str, Any]], list[str]] | None = None
    # A config that passes the schema and the check, for the catalogue
    # (GET /api/v1/step-types/); tests hold every registered example to both.
    example: dict[str, Any] = field(default_factory=dict)


_types: dict[str, StepType] = {}


def register(step_type: StepType) -> StepType:
    if step_type.name in _types:
        raise ValueError(f"Step type {step_type.name!r} is already registered.")
    _types[step_type.name] = step_type
    return step_type


def automatic(
    name: str,
    handler: Handler,
    *,
    config_schema: dict[str, Any] | None = None,
    description: str = "",
    check: Callable[[dict[str, Any]], list[str]] | None = None,
    example: dict[str, Any] | None = None,
) -> StepType:
    """An automatic step type (not registered yet); its description defaults to the
    handler's docstring."""
    return StepType(
        name=name,
        config_schema=config_schema or {"type": "object"},
        handler=handler,
        description=description or (handler.__doc__ or "").strip(),
        check=check,
        example=example or {},
    )


def step_type(
    name: str,
    *,
    config_schema: dict[str, Any] | None = None,
    description: str = "",
    check: Callable[[dict[str, Any]], list[str]] | None = None,
    example: dict[str, Any] | None = None,
) -> Callable[[Handler], Handler]:
    """Register an automatic step type whose handler is the decorated function.

    For step types of an app: decorate in a module its AppConfig.ready() imports.
    """

    def decorate(handler: Handler) -> Handler:
        register(
            automatic(
                name,
                handler,
                config_schema=config_schema,
                description=description,
                check=check,
                example=example,
            )
        )
        return handler

    return decorate


def get(name: str) -> StepType:
    return _types[name]


def is_registered(name: str) -> bool:
    return name in _types


def names() -> list[str]:
    return sorted(_types)


def all_types() -> list[StepType]:
    """Every registered step type, by name."""
    return [_types[name] for name in names()]
