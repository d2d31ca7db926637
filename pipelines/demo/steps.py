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
