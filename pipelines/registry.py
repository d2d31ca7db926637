"""The step-type registry and the built-in automatic step types."""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from pipelines import outbound
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


_types: dict[str, StepType] = {}


def register(step_type: StepType) -> StepType:
    if step_type.name in _types:
        raise ValueError(f"Step type {step_type.name!r} is already registered.")
    _types[step_type.name] = step_type
    return step_type


def step_type(
    name: str,
    *,
    config_schema: dict[str, Any] | None = None,
    description: str = "",
    check: Callable[[dict[str, Any]], list[str]] | None = None,
) -> Callable[[Handler], Handler]:
    """Register an automatic step type whose handler is the decorated function."""

    def decorate(handler: Handler) -> Handler:
        register(
            StepType(
                name=name,
                config_schema=config_schema or {"type": "object"},
                handler=handler,
                description=description or (handler.__doc__ or "").strip(),
                check=check,
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


# --- python ---------------------------------------------------------------------------


def _within(name: str, modules: list[str]) -> bool:
    return any(name == module or name.startswith(module + ".") for module in modules)


def _kind(target: Any) -> str:
    if inspect.isclass(target):
        return "a class"
    if inspect.ismodule(target):
        return "a module"
    if inspect.isbuiltin(target):
        return "a builtin"
    return f"a {type(target).__name__}"


def resolve_callable(path: str) -> Callable[..., Any]:
    """The function `pkg.mod.func` names, if a spec may call it; ValueError says why not.

    A spec is data, possibly posted over the API. It may name only a plain function that
    a module in FIREFLY_CALLABLE_MODULES (or below one) defines itself: not a class, a
    builtin, or a name the module imported from elsewhere (`mod.os.system`,
    `mod.json.loads`, a function `from x import f`), and no private or dunder name
    (`__import__`, `__builtins__`).
    """
    allowed = list(settings.FIREFLY_CALLABLE_MODULES)
    parts = path.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise ValueError(f"{path!r} is not a dotted path to a function (pkg.mod.func).")
    private = next((part for part in parts if part.startswith("_")), None)
    if private is not None:
        raise ValueError(f"{path!r} names {private!r}: private and dunder names are refused.")
    if not _within(path, allowed):
        raise ValueError(f"{path!r} is outside the allowed modules ({', '.join(allowed)}).")
    # The longest prefix that is a module (only prefixes inside an allowed module are
    # imported); what follows it must be one name that module defines.
    module: Any = None
    index = 1
    for index in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:index])
        if not _within(name, allowed):
            break
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not name.startswith(exc.name):
                raise ValueError(f"cannot import {name!r}: {exc}") from exc
            continue
        except ImportError as exc:
            raise ValueError(f"cannot import {name!r}: {exc}") from exc
        break
    if module is None:
        raise ValueError(f"{path!r} names no module in {', '.join(allowed)}.")
    module_name, rest = module.__name__, parts[index:]
    target = getattr(module, rest[0], None)
    if target is None:
        raise ValueError(f"cannot import {path!r}: {module_name} has no {rest[0]!r}.")
    if len(rest) > 1:
        raise ValueError(
            f"{path!r} reaches into {rest[0]!r}, {_kind(target)} that {module_name} "
            "imported: only a function an allowed module defines may be named."
        )
    if not inspect.isfunction(target):
        raise ValueError(f"{path!r} is {_kind(target)}, not a function.")
    if not _within(target.__module__, allowed):
        raise ValueError(
            f"{path!r} is {target.__module__}.{target.__qualname__}, imported into "
            f"{module_name}: it is defined outside the allowed modules ({', '.join(allowed)})."
        )
    return target


def _check_python(config: dict[str, Any]) -> list[str]:
    try:
        resolve_callable(config["callable"])
    except ValueError as exc:
        return [str(exc)]
    return []


@step_type(
    "python",
    config_schema={
        "type": "object",
        "required": ["callable"],
        "properties": {"callable": {"type": "string", "minLength": 3}},
    },
    check=_check_python,
)
def run_python(ctx: StepContext) -> dict[str, Any] | Pause | Handoff:
    """Call a Python function with the step context; it returns a dict, Pause or Handoff."""
    result = resolve_callable(ctx.config["callable"])(ctx)
    if result is None:
        return {}
    if isinstance(result, Pause | Handoff | dict):
        return result
    raise TypeError(
        f"{ctx.config['callable']} returned {type(result).__name__}; "
        "a step returns a dict, Pause or Handoff."
    )


# --- http -----------------------------------------------------------------------------

MAX_REDIRECTS = 5


@step_type(
    "http",
    config_schema={
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
            "body": {},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
        },
        "additionalProperties": False,
    },
)
def run_http(ctx: StepContext) -> dict[str, Any]:
    """Send one HTTP request to an allowed host; a 4xx/5xx answer fails the step."""
    headers = {"Idempotency-Key": ctx.idempotency_key, **ctx.config.get("headers", {})}
    response = outbound.send(
        ctx.config.get("method", "GET"),
        ctx.config["url"],
        allowed=outbound.HTTP_STEPS,
        max_redirects=MAX_REDIRECTS,
        timeout=ctx.config.get("timeout_s", 10),
        headers=headers,
        json=ctx.config.get("body"),
    )
    response.raise_for_status()
    try:
        payload: Any = response.json()
    except ValueError:
        payload = response.text
    return {"status_code": response.status_code, "body": payload}


# --- small built-ins ------------------------------------------------------------------


@step_type("noop", config_schema={"type": "object", "additionalProperties": False})
def run_noop(ctx: StepContext) -> dict[str, Any]:
    """Do nothing and return {}."""
    return {}


@step_type(
    "sleep",
    config_schema={
        "type": "object",
        "required": ["seconds"],
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 86400}},
        "additionalProperties": False,
    },
)
def run_sleep(ctx: StepContext) -> dict[str, Any]:
    """Wait `seconds` (without holding a database connection), then return them."""
    started = time.monotonic()
    ctx.cancelled.wait(ctx.config["seconds"])
    return {"slept_s": round(time.monotonic() - started, 3)}


class StepFailure(Exception):
    """Raised by the `fail` step type."""


@step_type(
    "fail",
    config_schema={
        "type": "object",
        "properties": {
            "message": {"type": "string"},
            "times": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    },
)
def run_fail(ctx: StepContext) -> dict[str, Any]:
    """Fail the first `times` attempts (every attempt when `times` is absent)."""
    times = ctx.config.get("times")
    if times is None or ctx.attempt <= times:
        raise StepFailure(ctx.config.get("message", "step failed on purpose"))
    return {"attempt": ctx.attempt}


@step_type(
    "handoff",
    config_schema={
        "type": "object",
        "required": ["pipeline"],
        "properties": {
            "pipeline": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,99}$"},
            "payload": {"type": "object"},
            "payload_from": {"type": "string"},
            "wait": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
)
def run_handoff(ctx: StepContext) -> Handoff:
    """Start a run of `pipeline`; its inputs are `payload_from`'s outputs updated by `payload`.

    With `wait: true` the step waits for that run and ends as it did.
    """
    payload: dict[str, Any] = {}
    source = ctx.config.get("payload_from")
    if source:
        if source not in ctx.upstream:
            raise ValueError(
                f"payload_from: {source!r} is not a direct upstream step that succeeded"
            )
        payload.update(ctx.upstream[source] or {})
    payload.update(ctx.config.get("payload", {}))
    return Handoff(ctx.config["pipeline"], payload, wait=ctx.config.get("wait", False))
