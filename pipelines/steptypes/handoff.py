"""The `handoff` step type: hand work to a run of another pipeline."""

from __future__ import annotations

from typing import Any

from pipelines.context import Handoff, StepContext
from pipelines.registry import automatic


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


STEP_TYPES = [
    automatic(
        "handoff",
        run_handoff,
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
        example={"pipeline": "fulfilment", "payload": {"priority": "high"}, "wait": True},
    )
]
