"""The `python` step type: call a function the spec names."""

from __future__ import annotations

from typing import Any

from pipelines.callables import resolve_callable
from pipelines.context import Handoff, Pause, StepContext
from pipelines.registry import automatic


def _check_python(config: dict[str, Any]) -> list[str]:
    try:
        resolve_callable(config["callable"])
    except ValueError as exc:
        return [str(exc)]
    return []


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


STEP_TYPES = [
    automatic(
        "python",
        run_python,
        config_schema={
            "type": "object",
            "required": ["callable"],
            "properties": {"callable": {"type": "string", "minLength": 3}},
        },
        check=_check_python,
        example={"callable": "pipelines.demo.steps.build"},
    )
]
