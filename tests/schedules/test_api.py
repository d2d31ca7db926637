"""The schedules API: list, create, read, change, pause, resume, delete; refusals; tenants."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from pipelines.models import SecurityEvent
from schedules.models import Schedule
from tests.api.conftest import client_for, error_of
from tokens.services import token_create

__all__ = ["client_for"]  # the API tests' fixture, used here too

URL = "/api/v1/pipelines/nightly/schedules/"


def test_the_lifecycle_of_a_schedule(nightly, users, client_for):
    api = client_for(users["boss"])
    made = api.post(
        URL,
        {
            "name": "nightly",
            "cron": "0 2 * * *",
            "timezone": "Europe/Paris",
            "inputs": {"target": "prod"},
            "overlap": "queue",
        },
        format="json",
    )
    assert made.status_code == 201, made.content
    body = made.json()
    assert made["Location"] == f"{URL}{body['id']}/"
    assert body["next_fire_at"].endswith("Z")
    assert body["last_run"] is None
    assert body["origin"] == "manual"
    assert body["overlap"] == "queue"
    listed = api.get(URL).json()
    assert [s["name"] for s in listed] == ["nightly"]
    one = f"{URL}{body['id']}/"
    assert api.get(one).json()["cron"] == "0 2 * * *"
    paused = api.patch(one, {"enabled": False}, format="json")
    assert paused.status_code == 200
    assert paused.json()["enabled"] is False
    assert paused.json()["next_fire_at"] is None
    resumed = api.patch(one, {"enabled": True}, format="json").json()
    assert resumed["enabled"] is True
    assert resumed["next_fire_at"]
    replaced = api.put(
        one, {"name": "often", "every_s": 30, "inputs": {"target": "x"}}, format="json"
    )
    assert replaced.status_code == 200, replaced.content
    assert replaced.json()["cron"] == ""
    assert replaced.json()["overlap"] == "skip"
    assert api.delete(one).status_code == 204
    assert not Schedule.objects.exists()
    error_of(api.get(one), 404, "not_found")


def test_bad_input_is_a_400_naming_the_field(nightly, users, client_for):
    api = client_for(users["boss"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "a", "cron": "99 * * * *", "inputs": {"target": "p"}}, "cron"),
        (
            {
                "name": "a",
                "cron": "0 * * * *",
                "timezone": "Mars/Olympus",
                "inputs": {"target": "p"},
            },
            "timezone",
        ),
        ({"name": "a", "every_s": 60, "inputs": {"target": 1}}, "inputs.target"),
        ({"name": "a", "inputs": {"target": "p"}}, "cron"),
    ]
    for body, field in cases:
        error = error_of(api.post(URL, body, format="json"), 400, "invalid")
        assert field in [d["field"] for d in error["details"]], error
    error_of(api.post(URL, {"name": "a", "every_s": "soon"}, format="json"), 400)
    assert not Schedule.objects.exists()


def test_a_starter_sees_but_may_not_change_and_is_recorded(nightly, users, client_for):
    boss, starter = client_for(users["boss"]), client_for(users["starter"])
    made = boss.post(URL, {"name": "a", "every_s": 60, "inputs": {"target": "p"}}, format="json")
    assert starter.get(URL).status_code == 200
    error_of(
        starter.post(URL, {"name": "b", "every_s": 60, "inputs": {"target": "p"}}, format="json"),
        403,
        "forbidden",
    )
    one = f"{URL}{made.json()['id']}/"
    error_of(starter.patch(one, {"enabled": False}, format="json"), 403)
    error_of(starter.delete(one), 403)
    assert (
        SecurityEvent.objects.filter(event="schedule.refused", actor=users["starter"]).count() == 3
    )
    assert Schedule.objects.get().enabled is True


def test_another_organization_cannot_see_or_change_them(nightly, users, elsewhere, client_for):
    made = client_for(users["boss"]).post(
        URL, {"name": "a", "every_s": 60, "inputs": {"target": "p"}}, format="json"
    )
    one = f"{URL}{made.json()['id']}/"
    stranger = APIClient()
    _, key = token_create(user=elsewhere["admin"], name="t", organization=elsewhere["org"])
    stranger.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    error_of(stranger.get(URL), 404)
    error_of(stranger.get(one), 404)
    error_of(stranger.patch(one, {"enabled": False}, format="json"), 404)
    error_of(stranger.delete(one), 404)
    assert Schedule.objects.get().enabled is True


def test_a_schedule_of_another_pipeline_is_not_found_through_this_one(
    nightly, users, client_for, make_pipeline
):
    make_pipeline([{"name": "a", "type": "noop"}], name="other")
    api = client_for(users["boss"])
    made = api.post(URL, {"name": "a", "every_s": 60, "inputs": {"target": "p"}}, format="json")
    error_of(api.get(f"/api/v1/pipelines/other/schedules/{made.json()['id']}/"), 404)
    error_of(api.delete(f"/api/v1/pipelines/other/schedules/{made.json()['id']}/"), 404)
