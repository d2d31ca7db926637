"""Python steps used by the tests."""

from __future__ import annotations

from typing import Any

from pipelines.context import Pause, StepContext


def echo(ctx: StepContext) -> dict[str, Any]:
    return {"inputs": dict(ctx.inputs), "upstream": dict(ctx.upstream), "extra": dict(ctx.extra)}


def pick(ctx: StepContext) -> dict[str, Any]:
    return {"env": ctx.inputs["env"]}


def add(ctx: StepContext) -> dict[str, Any]:
    return {
        "total": sum(out.get("value", 0) for out in ctx.upstream.values())
        + ctx.config.get("plus", 0)
    }


def value(ctx: StepContext) -> dict[str, Any]:
    return {"value": ctx.inputs.get("value", 1)}


def pause(ctx: StepContext) -> Pause:
    return Pause(reason="numbers look odd")
