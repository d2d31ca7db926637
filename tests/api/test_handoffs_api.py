"""Contract tests for runs' parents, children and handoff envelopes, and acknowledging them."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pipelines.models import AuditEntry, Run
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db

V1 = "/api/v1"


def acknowledged_entries(run: Run) -> int:
    return AuditEntry.objects.filter(run=run, event="handoff.acknowledged").count()


# --- reading ----------------------------------------------------------------------------


def test_a_run_shows_its_children_and_envelopes(client_for, users, waiting_run, hand_off):
    origin = waiting_run()
    envelope = hand_off(origin, payload={"ticket": 7}, wait=True)
    queued = hand_off(origin, started=False, origin_step="")

    body = client_for(users["outsider"]).get(f"{V1}/runs/{origin.pk}/").json()

    assert body["parent_run"] is None
    assert body["children"] == [
        # The child's first steps were queued as it was started.
        {"id": envelope.child_run_id, "pipeline": "intake", "status": "running"}
    ]
    assert [e["id"] for e in body["envelopes"]] == [envelope.pk, queued.pk]
    first, second = body["envelopes"]
    assert first == {
        "id": envelope.pk,
        "origin_run": origin.pk,
        "origin_step": "review",
        "target_pipeline": "intake",
        "payload": {"ticket": 7},
        "wait": True,
        "child_run": envelope.child_run_id,
        "status": "accepted",
        "queued_at": first["queued_at"],
        "accepted_at": first["accepted_at"],
        "acknowledged_at": None,
        "acknowledged_by": None,
        "decision": None,
    }
    assert first["queued_at"]
    assert first["accepted_at"]
    assert (second["status"], second["child_run"], second["origin_step"]) == ("queued", None, "")
    assert (body["disposition"], body["finishing"]) == (None, False)
    assert "trace_id" in body


def test_a_child_run_names_its_parent(client_for, users, waiting_run, hand_off):
    origin = waiting_run()
    envelope = hand_off(origin)

    body = client_for(users["r1"]).get(f"{V1}/runs/{envelope.child_run_id}/").json()

    assert body["parent_run"] == origin.pk
    assert body["children"] == []
    assert body["envelopes"] == []


def test_finishing_disposition_and_trace_id(client_for, users, waiting_run):
    run = waiting_run()
    Run.objects.filter(pk=run.pk).update(
        finishing="succeeded", disposition={"filed": True}, trace_id="a" * 32
    )
    api = client_for(users["r1"])

    body = api.get(f"{V1}/runs/{run.pk}/").json()
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED)
    finished = api.get(f"{V1}/runs/{run.pk}/").json()

    assert (body["finishing"], body["disposition"], body["trace_id"]) == (
        True,
        {"filed": True},
        "a" * 32,
    )
    assert finished["finishing"] is False  # a finished run is no longer finishing


def test_the_run_detail_costs_the_same_with_many_handoffs(client_for, users, waiting_run, hand_off):
    api = client_for(users["r1"])

    def queries(run: Run) -> int:
        api.get(f"{V1}/runs/{run.pk}/")  # the token's user is cached after this
        with CaptureQueriesContext(connection) as captured:
            response = api.get(f"{V1}/runs/{run.pk}/")
        assert response.status_code == 200
        return len(captured.captured_queries)

    few, many = waiting_run(), waiting_run()
    hand_off(few)
    for _ in range(6):
        hand_off(many)

    assert len(api.get(f"{V1}/runs/{many.pk}/").json()["envelopes"]) == 6
    assert queries(many) == queries(few)


def test_read_one_envelope(client_for, users, waiting_run, hand_off):
    envelope = hand_off(waiting_run(), payload={"ticket": 7})
    api = client_for(users["outsider"])

    body = api.get(f"{V1}/handoffs/{envelope.pk}/").json()

    assert (body["id"], body["target_pipeline"], body["payload"]) == (
        envelope.pk,
        "intake",
        {"ticket": 7},
    )
    assert body["status"] == "accepted"
    error_of(api.get(f"{V1}/handoffs/999999/"), 404, "not_found")


# --- acknowledging ----------------------------------------------------------------------


def test_the_starter_acknowledges_then_again_is_409(client_for, users, waiting_run, hand_off):
    origin = waiting_run()
    envelope = hand_off(origin)
    api = client_for(users["starter"])
    url = f"{V1}/handoffs/{envelope.pk}/acknowledge/"

    response = api.post(url, {"decision": "filed as INC-7"}, format="json")
    again = api.post(url, {"decision": "twice"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["acknowledged_by"], body["decision"]) == (
        "acknowledged",
        "starter",
        "filed as INC-7",
    )
    assert body["acknowledged_at"]
    envelope.refresh_from_db()
    assert envelope.status == "acknowledged"
    assert envelope.decision == "filed as INC-7"
    assert acknowledged_entries(origin) == 1
    error_of(again, 409, "conflict")
    envelope.refresh_from_db()
    assert envelope.decision == "filed as INC-7"
    detail = api.get(f"{V1}/runs/{origin.pk}/").json()
    assert detail["envelopes"][0]["status"] == "acknowledged"


def test_staff_acknowledge_with_an_object(client_for, users, waiting_run, hand_off):
    envelope = hand_off(waiting_run())

    response = client_for(users["boss"]).post(
        f"{V1}/handoffs/{envelope.pk}/acknowledge/",
        {"decision": {"outcome": "merged", "into": 12}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["decision"] == {"outcome": "merged", "into": 12}
    assert response.json()["acknowledged_by"] == "boss"


def test_an_outsider_may_not_acknowledge(client_for, users, waiting_run, hand_off):
    origin = waiting_run()
    envelope = hand_off(origin)

    response = client_for(users["outsider"]).post(
        f"{V1}/handoffs/{envelope.pk}/acknowledge/", {"decision": "mine"}, format="json"
    )

    error = error_of(response, 403, "forbidden")
    assert "run's starter" in error["message"]
    envelope.refresh_from_db()
    assert envelope.status == "accepted"
    assert acknowledged_entries(origin) == 0


def test_unknown_envelope_and_anonymous(client_for, users):
    url = f"{V1}/handoffs/999999/acknowledge/"

    error_of(client_for(users["boss"]).post(url, {"decision": "x"}, format="json"), 404)
    anonymous = client_for(None).post(url, {"decision": "x"}, format="json")

    error_of(anonymous, 401, "not_authenticated")
    error_of(client_for(None).get(f"{V1}/handoffs/1/"), 401, "not_authenticated")


def names_decision(error: dict[str, Any]) -> bool:
    """Whether a 400 names the field, as {field: [messages]} or as [{field, message}]."""
    details = error["details"]
    if isinstance(details, dict):
        return "decision" in details
    return any(item.get("field") == "decision" for item in details)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"decision": None},
        {"decision": 5},
        {"decision": ["a"]},
        {"decision": ""},
        {"decision": "   "},
    ],
)
def test_a_bad_decision_is_400_naming_the_field(client_for, users, waiting_run, hand_off, body):
    origin = waiting_run()
    envelope = hand_off(origin)

    response = client_for(users["starter"]).post(
        f"{V1}/handoffs/{envelope.pk}/acknowledge/", body, format="json"
    )

    error = error_of(response, 400, "invalid")
    assert names_decision(error), error
    envelope.refresh_from_db()
    assert envelope.acknowledged_at is None
    assert acknowledged_entries(origin) == 0


# --- the schema -------------------------------------------------------------------------


def test_the_schema_describes_handoffs(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    paths, components = schema["paths"], schema["components"]["schemas"]

    acknowledge = paths["/api/v1/handoffs/{id}/acknowledge/"]["post"]
    body = acknowledge["requestBody"]["content"]["application/json"]["schema"]
    run_detail = components["RunDetail"]["properties"]

    assert set(acknowledge["responses"]) >= {"200", "400", "401", "403", "404", "409"}
    assert "get" in paths["/api/v1/handoffs/{id}/"]
    assert components[body["$ref"].rsplit("/", 1)[1]]["required"] == ["decision"]
    assert set(run_detail) >= {
        "parent_run",
        "children",
        "envelopes",
        "disposition",
        "finishing",
        "trace_id",
    }
    envelope = components["Handoff"]["properties"]
    status = components[envelope["status"]["allOf"][0]["$ref"].rsplit("/", 1)[1]]
    assert status["enum"] == ["queued", "accepted", "acknowledged"]
    assert envelope["payload"]["type"] == "object"
    assert envelope["acknowledged_by"]["nullable"] is True
    assert run_detail["children"]["items"]["$ref"].endswith("/RunLink")
