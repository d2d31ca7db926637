"""Python steps that return values JSON cannot hold, called by tests/security."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

from pipelines.context import Handoff, StepContext


def decimal_total(ctx: StepContext) -> dict[str, Any]:
    return {"count": 3, "total": decimal.Decimal("12.50")}


def a_set(ctx: StepContext) -> dict[str, Any]:
    return {"tags": {"a", "b"}}


def raw_bytes(ctx: StepContext) -> dict[str, Any]:
    return {"body": b"\x00\x01"}


def a_datetime(ctx: StepContext) -> dict[str, Any]:
    return {"at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)}


def not_a_number(ctx: StepContext) -> dict[str, Any]:
    return {"ratio": float("nan")}


def infinity(ctx: StepContext) -> dict[str, Any]:
    return {"rows": [{"score": 1.0}, {"score": float("-inf")}]}


def an_integer_key(ctx: StepContext) -> dict[str, Any]:
    return {"by_id": {1: "one"}}


def a_nul(ctx: StepContext) -> dict[str, Any]:
    return {"text": "a\x00b"}


def itself(ctx: StepContext) -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["again"] = loop
    return {"loop": loop}


def a_list(ctx: StepContext) -> Any:
    return [1, 2, 3]


def a_handoff_of_decimals(ctx: StepContext) -> Handoff:
    return Handoff("elsewhere", {"amount": decimal.Decimal("1")})
