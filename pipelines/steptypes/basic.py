"""The small built-in step types: `noop`, `sleep` and `fail`."""

from __future__ import annotations

import time
from typing import Any

from pipelines.context import StepContext
from pipelines.registry import automatic


def run_noop(ctx: StepContext) -> dict[str, Any]:
    """Do nothing and return {}."""
    return {}


def run_sleep(ctx: StepContext) -> dict[str, Any]:
    """Wait `seconds` (without holding a database connection), then return them."""
    started = time.monotonic()
    ctx.cancelled.wait(ctx.config["seconds"])
    return {"slept_s": round(time.monotonic() - started, 3)}


class StepFailure(Exception):
    """Raised by the `fail` step type."""


def run_fail(ctx: StepContext) -> dict[str, Any]:
    """Fail the first `times` attempts (every attempt when `times` is absent)."""
    times = ctx.config.get("times")
    if times is None or ctx.attempt <= times:
        raise StepFailure(ctx.config.get("message", "step failed on purpose"))
    return {"attempt": ctx.attempt}


STEP_TYPES = [
    automatic("noop", run_noop, config_schema={"type": "object", "additionalProperties": False}),
    automatic(
        "sleep",
        run_sleep,
        config_schema={
            "type": "object",
            "required": ["seconds"],
            "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 86400}},
            "additionalProperties": False,
        },
        example={"seconds": 5},
    ),
    automatic(
        "fail",
        run_fail,
        config_schema={
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "times": {"type": "integer", "minimum": 0},
            },
            "additionalProperties": False,
        },
        example={"message": "the first attempt fails", "times": 1},
    ),
]
