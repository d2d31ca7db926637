"""Row-level security: a query that forgets its organization's filter, inside a request or
a task, still sees and writes nothing of another organization."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from rest_framework.test import APIClient

from approvals.models import Decision, HumanTask
from orgs import rls
from orgs.models import Membership, Organization
from pipelines import services
from pipelines.models import HandoffEnvelope, OutboxEvent, Pipeline, PipelineGrant, Run
from tests.approvals.conftest import drive
from tests.conftest import wait_finished
from tests.security.urls import TENANT_TABLES, unscoped_rows
from tokens.models import ApiToken
from tokens.services import token_create
from webhooks.models import Webhook, WebhookDelivery

pytestmark = pytest.mark.urls("tests.security.urls")

GATED = {
    "name": "payroll",  # the same name in both organizations
    "steps": [
        {"name": "build", "type": "noop"},
        {
            "name": "review",
            "type": "approval",
            "after": ["build"],
            "config": {"assignee_role": "reviewers"},
        },
    ],
}


def tenant(slug: str, django_user_model: Any) -> dict[str, Any]:
    """An organization with a row in every tenant table, and its member."""
    org = Organization.objects.create(slug=slug, name=slug.title())
    user = django_user_model.objects.create_user(f"{slug}-member", password="x")
    Membership.objects.create(user=user, organization=org, role=Membership.Role.AUTHOR)
    services.pipeline_create(spec=GATED, organization=org, member_role="starter")
    pipeline = Pipeline.objects.get(organization=org, name="payroll")
    PipelineGrant.objects.create(pipeline=pipeline, user=user, role="operator")
    run = drive(services.run_start(pipeline="payroll", inputs={}, actor=user, organization=org))
    task = HumanTask.objects.get(run=run)
    Decision.objects.create(organization=org, task=task, user=user, action="approve")
    HandoffEnvelope.objects.create(
        organization=org, origin_run=run, origin_step="review", key="k", target_pipeline="x"
    )
    hook = Webhook.objects.create(
        organization=org, url="https://hooks.example.com/in", events=["run.finished"]
    )
    WebhookDelivery.objects.create(organization=org, webhook=hook, event="run.finished")
    _, key = token_create(user=user, name="integration", organization=org)
    return {"org": org, "user": user, "pipeline": pipeline, "run": run, "key": key}


@pytest.fixture
def a(db: Any, django_user_model: Any) -> dict[str, Any]:
    return tenant("acme", django_user_model)


@pytest.fixture
def b(db: Any, django_user_model: Any) -> dict[str, Any]:
    return tenant("globex", django_user_model)


def only(side: dict[str, Any]) -> dict[str, list[int]]:
    """What a forgetful query of `side`'s member may see: its own rows in every table."""
    seen = {table: [side["org"].pk] for table in TENANT_TABLES}
    seen["pipelines_pipelinegrant"] = [side["pipeline"].pk]
    return seen


def page_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def scope_of_connection() -> tuple[bool, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user = session_user, current_setting('firefly.organization', true)"
        )
        same_role, organization = cursor.fetchone()
    return same_role, organization or ""


def test_both_organizations_have_rows_in_every_tenant_table(a, b):
    """Outside a request, Firefly itself sees both: what the attacks below aim at exists."""
    seen = unscoped_rows()
    for table in TENANT_TABLES:
        assert seen[table] == sorted([a["org"].pk, b["org"].pk]), table
    assert seen["pipelines_pipelinegrant"] == sorted([a["pipeline"].pk, b["pipeline"].pk])


def test_an_unfiltered_query_in_a_page_sees_only_the_users_organization(a, b):
    response = page_client(a["user"]).get("/rls/forgetful/")

    assert response.status_code == 200
    assert response.json() == only(a)


def test_a_page_behind_a_password_proxy_is_held_too(a, b):
    """Only an API token's header defers to the API; a proxy's Basic header does not."""
    client = page_client(a["user"])

    seen = client.get("/rls/forgetful/", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").json()

    assert seen == only(a)


def test_an_unfiltered_query_in_the_api_sees_only_the_tokens_organization(a, b):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {b['key']}")

    response = client.get("/api/v1/rls/forgetful/")

    assert response.status_code == 200
    assert response.json() == only(b)


def test_the_organization_header_of_a_session_user_of_two_decides(a, b):
    Membership.objects.create(user=a["user"], organization=b["org"])
    client = APIClient()
    client.force_login(a["user"])

    seen = client.get("/api/v1/rls/forgetful/", HTTP_X_FIREFLY_ORGANIZATION="globex").json()

    assert seen == only(b)


def test_writes_into_another_organization_are_refused(a, b):
    outcome = page_client(a["user"]).post("/rls/plant/", {"organization": b["org"].pk}).json()

    assert "row-level security" in outcome["insert"]
    assert "row-level security" in outcome["move"]
    assert outcome["deleted_tokens"] == 1  # its own organization's token, not B's
    assert not Pipeline.objects.filter(organization=b["org"], name="planted").exists()
    assert Run.objects.get(pk=a["run"].pk).organization_id == a["org"].pk
    assert ApiToken.objects.filter(organization=b["org"]).count() == 1


def test_a_user_of_no_organization_sees_no_tenant_row(a, b, django_user_model):
    stray = django_user_model.objects.create_user("stray", password="x")

    seen = page_client(stray).get("/rls/forgetful/").json()

    assert seen == {table: [] for table in [*TENANT_TABLES, "pipelines_pipelinegrant"]}


def test_the_connection_is_back_to_firefly_itself_after_each_request(a, b):
    """A kept connection carries no organization into the next request, not even after
    a request that failed."""
    page_client(a["user"]).get("/rls/forgetful/")
    assert scope_of_connection() == (True, "")
    assert rls.current() is None

    failing = page_client(a["user"])
    failing.raise_request_exception = False
    assert failing.get("/boom/").status_code == 500
    assert scope_of_connection() == (True, "")

    assert page_client(b["user"]).get("/rls/forgetful/").json() == only(b)
    assert unscoped_rows()["pipelines_run"] == sorted([a["org"].pk, b["org"].pk])


def test_superusers_are_operators_and_not_held(a, b, django_user_model):
    """Platform operators see every organization (Django admin lists them all)."""
    root = django_user_model.objects.create_superuser("root", password="x")

    seen = page_client(root).get("/rls/forgetful/").json()

    assert seen["pipelines_run"] == sorted([a["org"].pk, b["org"].pk])


def test_scoped_restores_the_scope_before_it(a, b):
    with rls.scoped(a["org"].pk):
        with rls.scoped(b["org"].pk):
            assert unscoped_rows() == only(b)
        assert unscoped_rows() == only(a)
    assert scope_of_connection() == (True, "")


@pytest.mark.worker
def test_a_step_on_a_real_worker_sees_only_its_runs_organization(worker, a, b):
    spec = {
        "name": "peek",
        "steps": [
            {
                "name": "peek",
                "type": "python",
                "config": {"callable": "tests.security.rls_steps.forgetful"},
            }
        ],
    }
    services.pipeline_create(spec=spec, organization=b["org"], member_role="starter")
    run = services.run_start(pipeline="peek", inputs={}, actor=b["user"], organization=b["org"])

    run = wait_finished(run)

    assert run.status == Run.Status.SUCCEEDED, run.error
    seen = run.steps.get(step_name="peek").outputs["seen"]
    assert seen["pipelines_run"] == [b["org"].pk]
    assert seen["approvals_webhookdelivery"] == [b["org"].pk]
    assert seen["tokens_apitoken"] == [b["org"].pk]
    assert seen["pipelines_pipelinegrant"] == [b["pipeline"].pk]


def test_the_outbox_is_held_to_the_organization_too(a, b):
    """Events waiting to be relayed carry their payloads: one organization's are not
    another's, whatever a raw query asks for, and a write into the other is refused."""
    for side in (a, b):
        OutboxEvent.objects.create(
            organization=side["org"], event="run.finished", payload={"run": side["run"].pk}
        )
    b_rows = OutboxEvent.objects.filter(organization=b["org"]).count()
    with rls.scoped(a["org"].pk), connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT organization_id FROM pipelines_outboxevent")
        assert [row[0] for row in cursor.fetchall()] == [a["org"].pk]
        with pytest.raises(DatabaseError), transaction.atomic():
            cursor.execute(
                "INSERT INTO pipelines_outboxevent (organization_id, event, payload, created_at,"
                " attempts, last_error) VALUES (%s, 'run.finished', '{}', now(), 0, '')",
                [b["org"].pk],
            )
    assert OutboxEvent.objects.filter(organization=b["org"]).count() == b_rows
