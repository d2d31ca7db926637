"""The `http` step type: one request to an allowed host."""

from __future__ import annotations

from typing import Any

from pipelines import outbound
from pipelines.context import StepContext
from pipelines.registry import automatic

MAX_REDIRECTS = 5


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


STEP_TYPES = [
    automatic(
        "http",
        run_http,
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
        example={
            "url": "https://deploy.example.com/api/releases",
            "method": "POST",
            "body": {"version": "1.4.2"},
            "headers": {"Accept": "application/json"},
            "timeout_s": 30,
        },
    )
]
