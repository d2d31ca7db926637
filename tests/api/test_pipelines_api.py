"""Contract tests for /api/v1/ pipelines, runs, checkpoints and the audit log."""

from __future__ import annotations

import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pipelines import services
from pipelines.models import AuditEntry, Run
from tests.api.conftest import GATED, error_of
from tests.approvals.conftest import drive
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db

V1 = "/api/v1"
ONLY_OPERATORS = (
    "Only the run's starter, its pipeline's operators and the organization's admins may"
)


# --- authentication and the error shape ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/pipelines/"),
        ("post", "/pipelines/"),
        ("get", "/pipelines/gated/"),
        ("post", "/pipelines/gated/runs/"),
        ("get", "/runs/"),
        ("get", "/runs/1/"),
        ("post", "/runs/1/cancel/"),
        ("post", "/runs/1/resume/"),
        ("post", "/runs/1/fork/"),
        ("get", "/runs/1/checkpoints/"),
        ("get", "/runs/1/audit/"),
        ("get", "/tasks/"),
        ("get", "/tasks/1/"),
        ("post", "/tasks/1/approve/"),
        ("post", "/tasks/1/reject/"),
        ("post", "/tasks/1/rollback/"),
        ("post", "/tasks/1/complete/"),
        ("post", "/tasks/1/claim/"),
        ("post", "/tasks/1/unclaim/"),
        ("get", "/audit/"),
    ],
)
def test_anonymous_requests_get_401_with_a_challenge(client_for, method, path):
    response = getattr(client_for(None), method)(V1 + path, {}, format="json")
    error_of(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


def test_a_bad_token_is_401(client_for):
    client = client_for(None)
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    error_of(client.get(f"{V1}/runs/"), 401, "authentication_failed")


def test_session_authentication_works_too(client, users):
    client.force_login(users["r1"])
    assert client.get(f"{V1}/runs/").status_code == 200


def test_unknown_endpoints_and_methods_answer_in_the_error_shape(client_for, users):
    api = client_for(users["r1"])
    error_of(api.get(f"{V1}/nowhere/"), 404, "not_found")
    error_of(api.get(f"{V1}/runs/abc/"), 404, "not_found")
    error_of(api.delete(f"{V1}/runs/"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "malformed"),
        ("[1, 2]", "application/json", 400, "invalid"),
        ('{"inputs": {"version": "\\ud800"}}', "application/json", 400, "invalid"),
        ('{"inputs": {"\\u0000": 1}}', "application/json", 400, "invalid"),
        ('{"inputs": {"version": NaN}}', "application/json", 400, "malformed"),
        ('{"version": "two"}', "application/json", 400, "invalid"),
        ("inputs=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_bad_bodies_are_4xx_never_500(client_for, users, gated, body, content_type, status, code):
    response = client_for(users["starter"]).post(
        f"{V1}/pipelines/gated/runs/", body, content_type=content_type
    )
    error_of(response, status, code)
    assert not Run.objects.exists()


# --- pipelines ----------------------------------------------------------------------------


def test_staff_create_a_pipeline_and_a_new_version(client_for, users):
    api = client_for(users["boss"])
    response = api.post(f"{V1}/pipelines/", {"spec": GATED}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "gated"
    assert body["description"] == "build, review, ship"
    assert body["version"] == 1
    assert body["spec"] == GATED
    assert body["versions"][0]["created_by"] == "boss"

    # The same spec again changes nothing; a changed one is version 2.
    again = api.post(f"{V1}/pipelines/", {"spec": GATED}, format="json")
    assert (again.status_code, again.json()["version"]) == (200, 1)
    changed = {**GATED, "description": "v2"}
    response = api.post(f"{V1}/pipelines/", {"spec": changed}, format="json")
    assert (response.status_code, response.json()["version"]) == (201, 2)
    assert [v["number"] for v in response.json()["versions"]] == [2, 1]


def test_a_spec_can_be_yaml_text(client_for, users):
    text = "name: tiny\nsteps:\n  - name: only\n    type: noop\n"
    response = client_for(users["boss"]).post(f"{V1}/pipelines/", {"spec": text}, format="json")
    assert response.status_code == 201
    assert response.json()["spec"]["steps"] == [{"name": "only", "type": "noop"}]


def test_only_authors_create_pipelines(client_for, users):
    error = error_of(
        client_for(users["r1"]).post(f"{V1}/pipelines/", {"spec": GATED}, format="json"),
        403,
        "forbidden",
    )
    assert "author role" in error["message"]


def test_a_bad_spec_is_400_with_each_problem(client_for, users):
    spec = {"name": "bad", "steps": [{"name": "a", "type": "nope"}, {"name": "a", "type": "noop"}]}
    error = error_of(
        client_for(users["boss"]).post(f"{V1}/pipelines/", {"spec": spec}, format="json"),
        400,
        "invalid_spec",
    )
    assert error["details"]
    assert all({"step", "field", "message"} <= set(d) for d in error["details"])
    assert any(d["field"] == "name" and "duplicate" in d["message"] for d in error["details"])


def test_a_missing_spec_is_400_naming_the_field(client_for, users):
    error = error_of(client_for(users["boss"]).post(f"{V1}/pipelines/", {}, format="json"), 400)
    assert error["code"] == "invalid"
    assert "spec" in error["details"]


def test_list_and_read_pipelines(client_for, users, gated):
    api = client_for(users["r1"])
    body = api.get(f"{V1}/pipelines/").json()
    assert body["count"] == 1
    assert body["results"][0] == {
        "name": "gated",
        "description": "build, review, ship",
        "member_role": "starter",
        "created_at": body["results"][0]["created_at"],
        "latest_version": 1,
    }
    detail = api.get(f"{V1}/pipelines/gated/").json()
    assert (detail["version"], detail["spec"]["name"]) == (1, "gated")
    error_of(api.get(f"{V1}/pipelines/nope/"), 404, "not_found")


# --- starting runs ------------------------------------------------------------------------


def test_start_a_run(client_for, users, gated):
    response = client_for(users["starter"]).post(
        f"{V1}/pipelines/gated/runs/", {"inputs": {"version": "2.0"}}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["pipeline"] == "gated"
    assert body["version"] == 1
    assert body["status"] == "running"  # its first step is queued as it starts
    assert body["inputs"] == {"version": "2.0"}
    assert body["created_by"] == "starter"
    assert response["Location"] == f"/api/v1/runs/{body['id']}/"
    assert Run.objects.get(pk=body["id"]).created_by == users["starter"]


def test_inputs_not_matching_the_input_schema_are_400_per_field(client_for, users, gated):
    api = client_for(users["starter"])
    error = error_of(
        api.post(f"{V1}/pipelines/gated/runs/", {"inputs": {"version": 3}}, format="json"), 400
    )
    assert error["details"][0]["field"] == "version"
    error = error_of(api.post(f"{V1}/pipelines/gated/runs/", {"inputs": {}}, format="json"), 400)
    assert error["details"] == [{"field": "version", "message": "'version' is a required property"}]
    error = error_of(
        api.post(f"{V1}/pipelines/gated/runs/", {"inputs": [1, 2]}, format="json"), 400
    )
    assert "inputs" in error["details"]
    error = error_of(
        api.post(f"{V1}/pipelines/gated/runs/", {"inputs": {"version": "a\x00b"}}, format="json"),
        400,
    )
    assert "inputs" in error["details"]
    assert not Run.objects.exists()


def test_starting_an_unknown_pipeline_is_404(client_for, users):
    error_of(
        client_for(users["starter"]).post(f"{V1}/pipelines/nope/runs/", {}, format="json"), 404
    )


def test_the_same_idempotency_key_returns_the_first_run(client_for, users, gated):
    api = client_for(users["starter"])
    url, body = f"{V1}/pipelines/gated/runs/", {"inputs": {"version": "1"}}
    first = api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="deploy-42")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    again = api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="deploy-42")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert Run.objects.count() == 1

    # Another user's key, or no key, starts another run.
    other = client_for(users["r1"]).post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="deploy-42")
    assert other.json()["id"] != first.json()["id"]
    assert api.post(url, body, format="json").json()["id"] != first.json()["id"]
    assert Run.objects.count() == 3


def test_an_overlong_idempotency_key_is_400(client_for, users, gated):
    error = error_of(
        client_for(users["starter"]).post(
            f"{V1}/pipelines/gated/runs/",
            {"inputs": {"version": "1"}},
            format="json",
            HTTP_IDEMPOTENCY_KEY="k" * 201,
        ),
        400,
    )
    assert "Idempotency-Key" in error["details"]


# --- reading runs -------------------------------------------------------------------------


def _started(users, n=1, **inputs):
    return [
        services.run_start(
            pipeline="gated", inputs={"version": str(i), **inputs}, actor=users["starter"]
        )
        for i in range(n)
    ]


def test_runs_are_listed_newest_first_and_paginated(client_for, users, gated):
    runs = _started(users, 3)
    api = client_for(users["r1"])
    body = api.get(f"{V1}/runs/", {"page_size": 2}).json()
    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == [runs[2].pk, runs[1].pk]
    assert body["next"] is not None
    page2 = api.get(body["next"]).json()
    assert [r["id"] for r in page2["results"]] == [runs[0].pk]
    error_of(api.get(f"{V1}/runs/", {"page": 99}), 404, "not_found")


def test_runs_filter_by_status_and_pipeline(client_for, users, gated):
    services.pipeline_create(
        member_role="starter", spec={"name": "other", "steps": [{"name": "a", "type": "noop"}]}
    )
    waiting = drive(_started(users)[0])
    pending = _started(users)[0]
    other = services.run_start(pipeline="other", inputs={}, actor=users["starter"])
    api = client_for(users["r1"])
    ids = lambda **q: [r["id"] for r in api.get(f"{V1}/runs/", q).json()["results"]]  # noqa: E731
    assert ids(status="waiting") == [waiting.pk]
    assert ids(pipeline="gated") == [pending.pk, waiting.pk]
    assert ids(pipeline="other", status="running") == [other.pk]
    assert ids(pipeline="other", status="pending") == []
    error = error_of(api.get(f"{V1}/runs/", {"status": "sleepy"}), 400, "invalid")
    assert "status" in error["details"]


def test_a_run_with_its_steps(client_for, users, waiting_run):
    run = waiting_run()
    body = client_for(users["outsider"]).get(f"{V1}/runs/{run.pk}/").json()
    assert body["status"] == "waiting"
    assert [(s["name"], s["status"]) for s in body["steps"]] == [
        ("build", "succeeded"),
        ("review", "waiting"),
        ("ship", "pending"),
    ]
    assert set(body["steps"][0]) >= {"generation", "attempt", "outputs", "latency_ms"}
    error_of(client_for(users["r1"]).get(f"{V1}/runs/999999/"), 404)


# --- cancel, resume, fork -----------------------------------------------------------------


def test_cancel_a_run_then_cancelling_again_is_409(client_for, users, waiting_run):
    run = waiting_run()
    api = client_for(users["starter"])
    response = api.post(f"{V1}/runs/{run.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    error = error_of(api.post(f"{V1}/runs/{run.pk}/cancel/"), 409, "conflict")
    assert "already cancelled" in error["message"]
    error_of(api.post(f"{V1}/runs/999999/cancel/"), 404)


def test_only_staff_or_the_starter_may_cancel_or_resume(client_for, users, waiting_run):
    run = waiting_run()
    for verb in ("cancel", "resume"):
        error = error_of(client_for(users["outsider"]).post(f"{V1}/runs/{run.pk}/{verb}/"), 403)
        assert error["message"] == f"{ONLY_OPERATORS} {verb} it."
    run.refresh_from_db()
    assert run.status == Run.Status.WAITING
    response = client_for(users["boss"]).post(f"{V1}/runs/{run.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


def test_resume_a_running_run_is_409_and_a_failed_one_resumes(client_for, users, waiting_run):
    api = client_for(users["starter"])
    error = error_of(api.post(f"{V1}/runs/{waiting_run().pk}/resume/"), 409, "conflict")
    assert "only a failed run" in error["message"]

    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "fragile",
            "steps": [
                {"name": "ok", "type": "noop"},
                {
                    "name": "pick",
                    "type": "python",
                    "after": ["ok"],
                    "config": {"callable": "tests.pipelines.callables.pick"},
                },
            ],
        },
    )
    failed = drive(services.run_start(pipeline="fragile", inputs={}, actor=users["starter"]))
    assert failed.status == Run.Status.FAILED
    response = api.post(f"{V1}/runs/{failed.pk}/resume/")
    assert response.status_code == 200
    assert response.json()["status"] == "running"


def test_checkpoints_and_fork(client_for, users, waiting_run):
    run = waiting_run()
    api = client_for(users["starter"])
    body = api.get(f"{V1}/runs/{run.pk}/checkpoints/").json()
    checkpoints = body["results"]
    assert [c["seq"] for c in checkpoints] == list(range(1, body["count"] + 1))
    build = next(c for c in checkpoints if c["step_name"] == "build")
    assert (build["kind"], build["status"]) == ("step", "succeeded")

    response = api.post(f"{V1}/runs/{run.pk}/fork/", {"checkpoint": build["seq"]}, format="json")
    assert response.status_code == 201
    fork = response.json()
    assert (fork["forked_from"], fork["forked_from_seq"]) == (run.pk, build["seq"])
    assert fork["created_by"] == "starter"

    error_of(api.post(f"{V1}/runs/{run.pk}/fork/", {"checkpoint": 999}, format="json"), 404)
    error = error_of(api.post(f"{V1}/runs/{run.pk}/fork/", {"checkpoint": "x"}, format="json"), 400)
    assert "checkpoint" in error["details"]
    error_of(api.get(f"{V1}/runs/999999/checkpoints/"), 404)


# --- audit --------------------------------------------------------------------------------


def test_a_runs_audit_trail_in_order(client_for, users, waiting_run):
    run = waiting_run()
    body = client_for(users["r1"]).get(f"{V1}/runs/{run.pk}/audit/").json()
    events = [e["event"] for e in body["results"]]
    assert events[0] == "run.created"
    assert "task.opened" in events
    assert [e["seq"] for e in body["results"]] == sorted(e["seq"] for e in body["results"])
    assert body["results"][0]["actor"] == "starter"
    assert body["results"][0]["pipeline"] == "gated"


def test_the_audit_log_uses_cursor_pagination(client_for, users, waiting_run):
    waiting_run()
    total = AuditEntry.objects.count()
    api = client_for(users["r1"])
    seen, url, pages = [], f"{V1}/audit/?page_size=2", 0
    while url:
        body = api.get(url).json()
        assert set(body) == {"next", "previous", "results"}
        seen += [e["id"] for e in body["results"]]
        url, pages = body["next"], pages + 1
        if url:
            assert "cursor" in parse_qs(urlparse(url).query)
    assert len(seen) == len(set(seen)) == total
    assert pages == (total + 1) // 2
    assert seen == list(
        AuditEntry.objects.order_by("-created_at", "-id").values_list("pk", flat=True)
    )
    error_of(api.get(f"{V1}/audit/", {"cursor": "garbage"}), 404, "not_found")


def test_the_audit_log_filters(client_for, users, waiting_run):
    first, second = waiting_run(), waiting_run()
    api = client_for(users["r1"])

    def events(**query):
        return [(e["run"], e["event"]) for e in api.get(f"{V1}/audit/", query).json()["results"]]

    assert {run for run, _ in events(run=first.pk)} == {first.pk}
    assert events(event="task.opened") == [(second.pk, "task.opened"), (first.pk, "task.opened")]
    assert {e for _, e in events(actor="starter")} == {"run.created"}
    assert events(since=(timezone.now() + timedelta(hours=1)).isoformat()) == []
    assert len(events(since=(timezone.now() - timedelta(hours=1)).isoformat())) > 0
    error = error_of(api.get(f"{V1}/audit/", {"since": "yesterday"}), 400, "invalid")
    assert "since" in error["details"]
    # ISO 8601 allows UTC offsets PostgreSQL does not (beyond 15:59): asked in UTC instead.
    assert events(since="2000-01-01T00:00:00-18:13") == events(since="2000-01-01T18:13:00Z")
    assert len(events(since="2000-01-01T00:00:00-18:13")) > 0
    error = error_of(api.get(f"{V1}/audit/", {"since": "9999-12-31T23:00:00-18:00"}), 400)
    assert error["details"]["since"] == ["Enter a time between the years 1 and 9999 in UTC."]


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_with_one_key_make_one_run(users, gated):
    """Both pass the first lookup; the unique index makes the second return the first's run."""
    barrier = threading.Barrier(4)
    results: list[int] = []

    def start() -> None:
        try:
            barrier.wait()
            run = services.run_start(
                pipeline="gated",
                inputs={"version": "1"},
                actor=users["starter"],
                idempotency_key="same",
            )
            results.append(run.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert len(set(results)) == 1
    assert Run.objects.filter(idempotency_key="same").count() == 1


# --- end to end, over HTTP only -----------------------------------------------------------


@pytest.mark.worker
def test_an_integration_drives_a_run_through_its_gate_over_http(worker, client_for, users):
    admin, ci, reviewer = (client_for(users[name]) for name in ("boss", "starter", "r1"))
    created = admin.post(
        f"{V1}/pipelines/", {"spec": GATED, "member_role": "starter"}, format="json"
    )
    assert created.status_code == 201
    run = ci.post(
        f"{V1}/pipelines/gated/runs/", {"inputs": {"version": "3.1"}}, format="json"
    ).json()

    def status() -> str:
        return str(ci.get(f"{V1}/runs/{run['id']}/").json()["status"])

    wait_for(lambda: status() == "waiting", message="the run to wait at its gate")
    (task,) = reviewer.get(f"{V1}/tasks/", {"mine": "true", "run": run["id"]}).json()["results"]
    assert task["step_name"] == "review"
    response = reviewer.post(f"{V1}/tasks/{task['id']}/approve/", {"comment": "go"}, format="json")
    assert response.status_code == 200
    wait_for(lambda: status() == "succeeded", message="the run to finish")

    events = [e["event"] for e in ci.get(f"{V1}/runs/{run['id']}/audit/").json()["results"]]
    assert events[0] == "run.created"
    assert events[-1] == "run.finished"
    assert "task.approved" in events


def test_list_pages_take_a_constant_number_of_queries(client_for, users, waiting_run):
    api = client_for(users["r1"])
    # The token's first use marks it used (one UPDATE, then none for a minute): not counted.
    assert api.get(f"{V1}/pipelines/").status_code == 200

    def queries(path: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get(path).status_code == 200
        return len(captured)

    paths = [f"{V1}/runs/", f"{V1}/tasks/?mine=true", f"{V1}/audit/", f"{V1}/pipelines/"]
    waiting_run()
    few = [queries(path) for path in paths]
    for _ in range(4):
        waiting_run()
    assert [queries(path) for path in paths] == few
    # token, the user's memberships, count, page, the page's pipelines by key (one
    # query: runs or tasks list); row-level security's enter and leave.
    assert max(few) <= 7
