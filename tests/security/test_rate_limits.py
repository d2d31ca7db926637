"""Attack: flood the calls that start runs or decide tasks."""

from __future__ import annotations

import pytest
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from pipelines.models import Run, SecurityEvent

V1 = "/api/v1"


@pytest.fixture
def two_per_minute(monkeypatch):
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "run_start": "2/min", "decide": "2/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


def test_starting_runs_is_rate_limited(users, client_for, gated, two_per_minute):
    api = client_for(users["starter"])
    answers = [
        api.post(f"{V1}/pipelines/gated/runs/", {"inputs": {"version": "1"}}, format="json")
        for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [201, 201, 429, 429]
    assert int(answers[2].headers["Retry-After"]) > 0
    assert answers[2].json()["error"]["code"] == "throttled"
    assert Run.objects.count() == 2
    # One record per window, not one per refused request.
    event = SecurityEvent.objects.get(event="api.throttled")
    assert (event.actor_name, event.data["scope"]) == ("starter", "run_start")

    # Another user has a budget of their own.
    other = client_for(users["r1"])
    response = other.post(
        f"{V1}/pipelines/gated/runs/", {"inputs": {"version": "1"}}, format="json"
    )
    assert response.status_code == 201


def test_deciding_is_rate_limited(users, client_for, waiting_run, two_per_minute):
    run = waiting_run()
    task = run.tasks.get()
    api = client_for(users["r1"])
    codes = [api.post(f"{V1}/tasks/{task.pk}/claim/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
