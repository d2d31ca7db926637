"""Fixtures for REST API tests: API clients per user, pipelines with a gate, waiting runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from pipelines import services
from pipelines.models import Run
from tests.approvals.conftest import drive
from tokens.services import token_create

GATED = {
    "name": "gated",
    "description": "build, review, ship",
    "input_schema": {
        "type": "object",
        "required": ["version"],
        "properties": {"version": {"type": "string"}},
    },
    "steps": [
        {"name": "build", "type": "noop"},
        {
            "name": "review",
            "type": "approval",
            "after": ["build"],
            "config": {"assignee_role": "reviewers"},
        },
        {"name": "ship", "type": "noop", "after": ["review"]},
    ],
}


@pytest.fixture
def superuser(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", "root@example.com", "x")


@pytest.fixture
def client_for(db: Any) -> Callable[[Any], APIClient]:
    """An APIClient authenticated with a new API token of the user (None: anonymous)."""

    def make(user: Any) -> APIClient:
        client = APIClient()
        if user is not None:
            _, key = token_create(user=user, name="tests")
            client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return make


@pytest.fixture
def gated(db: Any) -> str:
    services.pipeline_create(member_role="starter", spec=GATED)
    return "gated"


@pytest.fixture
def waiting_run(users: dict[str, Any], gated: str) -> Callable[..., Run]:
    """A run of `gated` started by `starter`, driven in-process to its review task."""

    def make(**inputs: Any) -> Run:
        run = services.run_start(
            pipeline=gated, inputs={"version": "1.0", **inputs}, actor=users["starter"]
        )
        run = drive(run)
        assert run.status == Run.Status.WAITING
        return run

    return make


def error_of(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the API's error shape and status; returns the error object."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])
