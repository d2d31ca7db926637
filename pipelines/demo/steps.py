"""Python steps used by the demo pipelines."""

from __future__ import annotations

import hashlib
from typing import Any

from pipelines.context import StepContext


def build(ctx: StepContext) -> dict[str, Any]:
    """Pretend to build a release artifact for the requested version."""
    version = ctx.inputs["version"]
    digest = hashlib.sha256(f"{ctx.run_id}:{version}".encode()).hexdigest()[:12]
    ctx.logger.info("built %s", version)
    return {"artifact": f"firefly-{version}.tar.gz", "sha": digest}


def test(ctx: StepContext) -> dict[str, Any]:
    """Pretend to run the test suite against the built artifact."""
    return {"artifact": ctx.upstream["build"]["artifact"], "passed": 128, "failed": 0}


def deploy(ctx: StepContext) -> dict[str, Any]:
    """Pretend to deploy the artifact; the idempotency key makes a re-run harmless."""
    artifact = ctx.upstream.get("test", {}).get("artifact") or ctx.inputs.get("version")
    return {"deployed": artifact, "deployment_id": ctx.idempotency_key}


def count_words(ctx: StepContext) -> dict[str, Any]:
    """Count the words of the run's text input."""
    text = ctx.inputs.get("text", "")
    return {"words": len(text.split()), "chars": len(text)}


def summarize(ctx: StepContext) -> dict[str, Any]:
    """Join the outputs of every upstream step into one summary."""
    return {"parts": sorted(ctx.upstream), "summary": dict(ctx.upstream)}


def draft(ctx: StepContext) -> dict[str, Any]:
    """Draft an article from the run's topic; a roll back brings the reviewer's comment."""
    note = ctx.extra.get("rollback", {}).get("comment", "")
    topic = ctx.inputs.get("topic", "Firefly")
    return {"title": f"All about {topic}", "body": f"A first draft about {topic}.", "note": note}


def submit_expense(ctx: StepContext) -> dict[str, Any]:
    """Record the expense claim."""
    return {"amount": ctx.inputs["amount"], "reason": ctx.inputs.get("reason", "")}


def pay(ctx: StepContext) -> dict[str, Any]:
    """Pretend to pay the approved expense once (the idempotency key guards re-runs).

    The amount comes from the run's inputs: a step sees the outputs of its direct
    upstream steps only, and pay's is the approval.
    """
    return {"paid": ctx.inputs["amount"], "payment_id": ctx.idempotency_key}


def publish(ctx: StepContext) -> dict[str, Any]:
    """Pretend to publish the edited article on the chosen channel."""
    edited = ctx.upstream.get("edit", {}).get("data", {})
    return {"published": edited.get("title"), "channel": ctx.config.get("channel", "blog")}


def release_notes(ctx: StepContext) -> dict[str, Any]:
    """Write the notes of a version; they go to the deploy pipeline as its inputs."""
    version = ctx.inputs["version"]
    return {"version": version, "notes": f"Firefly {version}: fixes and improvements."}


def record_rollout(harness: Any, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """on_finish of `rollout`: note what is still open and record the disposition."""
    loose = harness.unsettled()
    harness.finalize({"status": harness.status, "unsettled": loose.summary})
    if value is None:
        return None
    return {"deployed": value["ship"].get("deploy", {}).get("deployed")}
