"""Fixtures for the page tests: the approvals users and small gated pipelines."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines import services
from pipelines.models import Run
from tests.approvals.conftest import drive


def gate_pipeline(name: str = "gated", kind: str = "approval", **config: Any) -> str:
    step: dict[str, Any] = {
        "name": "review",
        "type": kind,
        "after": ["build"],
        "config": {"assignee_role": "reviewers", "instructions": "Check the build.", **config},
    }
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": name,
            "input_schema": {
                "type": "object",
                "required": ["version"],
                "properties": {"version": {"type": "string", "minLength": 1}},
            },
            "steps": [
                {"name": "build", "type": "noop"},
                step,
                {"name": "ship", "type": "noop", "after": ["review"]},
            ],
        },
    )
    return name


def waiting_run(starter: Any, name: str = "gated", inputs: Any = None, **config: Any) -> Run:
    gate_pipeline(name, **config)
    run = services.run_start(pipeline=name, inputs=inputs or {"version": "1.0"}, actor=starter)
    run = drive(run)
    assert run.status == Run.Status.WAITING
    return run


@pytest.fixture
def client_for(client: Any) -> Any:
    def login(user: Any) -> Any:
        client.force_login(user)
        return client

    return login
