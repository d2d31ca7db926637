"""Python steps used by the tests."""

from __future__ import annotations

import time
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


def double(ctx: StepContext) -> dict[str, Any]:
    return {"doubled": ctx.inputs["value"] * 2}


def backend(ctx: StepContext) -> dict[str, Any]:
    """The PostgreSQL backend serving this worker thread's connection."""
    from django.db import connection

    connection.ensure_connection()
    return {"pid": connection.connection.info.backend_pid}


def where(ctx: StepContext) -> dict[str, Any]:
    """Which Celery worker ran this step."""
    from celery import current_task

    return {"worker": current_task.request.hostname if current_task else None}


# --- on_finish callables: (harness, value) -> new output or None ----------------------


def total(harness: Any, value: dict[str, Any] | None) -> dict[str, Any]:
    """Sum the terminal steps' values, note it in the audit trail, and record a disposition."""
    result = {"total": sum(out.get("value", 0) for out in (value or {}).values())}
    harness.emit_audit("summed", result)
    harness.finalize({"status": harness.status, "unsettled": harness.unsettled().summary})
    return result


def slow_finalize(harness: Any, value: Any) -> None:
    time.sleep(0.5)
    harness.emit_audit("settled", {"attempt": harness.attempt})
    harness.finalize({"attempt": harness.attempt})


def explode(harness: Any, value: Any) -> None:
    raise ValueError("the ledger is closed")


def hand_over(harness: Any, value: Any) -> dict[str, Any]:
    envelope = harness.handoff_to("lifecycle-child", {"value": 21})
    harness.finalize(
        {"unsettled": harness.unsettled().summary, "counts": harness.unsettled().counts}
    )
    return {"handed": envelope.pk, "child": envelope.child_run_id}


def fails_once(harness: Any, value: Any) -> dict[str, Any]:
    from pipelines.models import AuditEntry

    if not AuditEntry.objects.filter(run_id=harness.run_id, event="run.on_finish_failed"):
        raise RuntimeError("the archive is down")
    return {"archived": True}


def upstream_names(ctx: StepContext) -> dict[str, Any]:
    """Reads its upstream steps' outputs (and copies none of them)."""
    return {"read": sorted(ctx.upstream)}


def chatty(ctx: StepContext) -> dict[str, Any]:
    ctx.logger.warning("chatty step says hello to run %s", ctx.run_id)
    return {"said": "hello"}


def sleepy_finalize(harness: Any, value: Any) -> None:
    """Longer than the tests' on_finish timeout; stops once told it was given up on."""
    harness.cancelled.wait(5)
    harness.finalize({"late": True})


def where_slowly(ctx: StepContext) -> dict[str, Any]:
    """Which Celery worker ran this step, after half a second (so branches spread out)."""
    time.sleep(0.5)
    return where(ctx)


def stuck_finalize(harness: Any, value: Any) -> None:
    """An on_finish that never ends by itself: its worker is killed under it."""
    time.sleep(60)
