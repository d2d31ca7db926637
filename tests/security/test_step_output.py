"""A step that returns what JSON cannot hold fails at once, saying which key holds what."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from pipelines.models import AuditEntry, Run, StepRun
from tests.approvals.conftest import drive
from tests.conftest import wait_finished
from tokens.services import token_create

HOSTILE = "tests.security.hostile_steps"


def api(user: Any) -> APIClient:
    client = APIClient()
    _, key = token_create(user=user, name="tests")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def start(users: dict[str, Any], callable_: str, retries: int = 0) -> Run:
    """As the attack arrives: staff load the spec, a user starts a run, both over the API."""
    step: dict[str, Any] = {
        "name": "calc",
        "type": "python",
        "config": {"callable": f"{HOSTILE}.{callable_}"},
    }
    if retries:
        step.update(retries=retries, retry_backoff_s=0.05)
    spec = {"name": f"hostile-{callable_.replace('_', '-')}", "steps": [step]}
    created = api(users["boss"]).post(
        "/api/v1/pipelines/", {"spec": spec, "member_role": "starter"}, format="json"
    )
    assert created.status_code == 201, created.content
    started = api(users["starter"]).post(
        f"/api/v1/pipelines/{spec['name']}/runs/", {"inputs": {}}, format="json"
    )
    assert started.status_code == 201, started.content
    return Run.objects.get(pk=started.json()["id"])


@pytest.mark.worker
def test_a_decimal_output_fails_the_step_at_once_on_a_real_worker(worker, users):
    began = time.monotonic()
    run = wait_finished(start(users, "decimal_total", retries=1), timeout=20)
    elapsed = time.monotonic() - began

    expected = "output key 'total' holds a Decimal, which is not JSON."
    assert run.status == Run.Status.FAILED
    assert expected in run.error
    # Its own retry policy, and nothing more: no lease ran out, no worker was "lost".
    attempts = list(run.steps.order_by("attempt").values_list("attempt", "status", "error"))
    assert attempts == [(1, "failed", expected), (2, "failed", expected)]
    entries = AuditEntry.objects.filter(run=run, step_name="calc").order_by("seq")
    assert [e.event for e in entries] == ["step.failed", "step.failed"]
    assert all(e.error_message == expected for e in entries)
    assert not AuditEntry.objects.filter(run=run, event="step.lost").exists()
    assert elapsed < 15  # far from the 60 s lease a stuck commit would wait out


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("callable_", "expected"),
    [
        ("a_set", "output key 'tags' holds a set, which is not JSON."),
        ("raw_bytes", "output key 'body' holds a bytes, which is not JSON."),
        ("a_datetime", "output key 'at' holds a datetime, which is not JSON."),
        ("not_a_number", "output key 'ratio' holds nan, which is not JSON."),
        ("infinity", "output key 'rows[1].score' holds -inf, which is not JSON."),
        ("an_integer_key", "output key 'by_id' has the key 1 (int); JSON keys are strings."),
        ("a_nul", "output key 'text' holds a NUL character, which PostgreSQL cannot store."),
        ("itself", "output key 'loop.again.again.again"),
        ("a_list", "a_list returned list; a step returns a dict, Pause or Handoff."),
        ("a_handoff_of_decimals", "handoff payload key 'amount' holds a Decimal"),
    ],
)
def test_each_value_json_cannot_hold_fails_the_step_naming_it(users, callable_, expected):
    run = drive(start(users, callable_))

    assert run.status == Run.Status.FAILED
    step = StepRun.objects.get(run=run, step_name="calc")
    assert step.status == StepRun.Status.FAILED
    assert step.outputs is None
    assert expected in step.error
    entry = AuditEntry.objects.get(run=run, event="step.failed")
    assert expected in entry.error_message
    if callable_ == "itself":
        assert "nested deeper than 64 levels" in entry.error_message
