"""Attack: replay another pipeline's run, or a different request, under a reused key."""

from __future__ import annotations

from rest_framework.test import APIClient

from orgs.models import Membership, Organization
from pipelines import services
from pipelines.models import Pipeline, Run
from tests.api.conftest import error_of
from tokens.services import token_create

V1 = "/api/v1"


def start(api, pipeline: str, key: str, **inputs):
    return api.post(
        f"{V1}/pipelines/{pipeline}/runs/",
        {"inputs": {"version": "1.0", **inputs}},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def test_the_same_key_on_another_pipeline_starts_that_pipeline(users, client_for, gated):
    services.pipeline_create(
        member_role="starter", spec={"name": "other", "steps": [{"name": "a", "type": "noop"}]}
    )
    api = client_for(users["starter"])
    first = start(api, "gated", "k-1")
    other = start(api, "other", "k-1")
    assert (first.status_code, other.status_code) == (201, 201)
    assert other.json()["id"] != first.json()["id"]
    assert other.json()["pipeline"] == "other"
    assert "Idempotent-Replayed" not in other.headers


def test_the_same_key_with_another_body_is_refused(users, client_for, gated):
    api = client_for(users["starter"])
    first = start(api, "gated", "k-2").json()
    error = error_of(start(api, "gated", "k-2", version="6.6.6"), 422, "idempotency_key_reused")
    assert f"run {first['id']}" in error["message"]
    assert Run.objects.count() == 1

    replay = start(api, "gated", "k-2")
    assert (replay.status_code, replay.json()["id"]) == (201, first["id"])
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_keys_are_per_user(users, client_for, gated):
    mine = start(client_for(users["starter"]), "gated", "k-3").json()
    theirs = start(client_for(users["r1"]), "gated", "k-3").json()
    assert mine["id"] != theirs["id"]


def test_the_same_key_in_another_organization_starts_that_organizations_run(
    users, client_for, gated
):
    """One person, two organizations, the same pipeline name and key: two runs, one each."""
    other = Organization.objects.create(slug="second", name="Second")
    Membership.objects.create(user=users["starter"], organization=other)
    spec = dict(Pipeline.objects.get(name="gated").versions.get().spec)
    services.pipeline_create(spec=spec, organization=other, member_role="starter")
    first = start(client_for(users["starter"]), "gated", "k-1")
    _, key = token_create(user=users["starter"], organization=other, name="second")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    second = start(api, "gated", "k-1")
    assert (first.status_code, second.status_code) == (201, 201), second.content
    assert "Idempotent-Replayed" not in second.headers
    runs = Run.objects.filter(pk__in=[first.json()["id"], second.json()["id"]])
    assert {run.organization_id for run in runs} == {Organization.objects.default().pk, other.pk}
    # And a retry in the second organization replays its own run.
    again = start(api, "gated", "k-1")
    assert (again.status_code, again.json()["id"]) == (201, second.json()["id"])
