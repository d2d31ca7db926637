"""The OpenAPI schema validates, the docs are served locally, and fuzzing finds no 500s."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.definitions import OPENAPI_30

from approvals.models import HumanTask
from pipelines import services
from tests.api.conftest import GATED
from tests.approvals.conftest import drive

pytestmark = pytest.mark.django_db


def test_the_schema_is_valid_openapi_3(client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    # The official OpenAPI 3.0 JSON Schema (as bundled by schemathesis).
    jsonschema.Draft4Validator(OPENAPI_30).validate(schema)
    assert schema["openapi"].startswith("3.")
    assert "Error" in schema["components"]["schemas"]
    paths = schema["paths"]
    assert "/api/v1/pipelines/{name}/runs/" in paths
    assert "/api/v1/tasks/{id}/rollback/" in paths
    for path, operations in paths.items():
        if path.startswith("/api/v1/webhooks"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "401" in responses, (method, path)
            error = responses["401"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}, (method, path)
            if method == "post":
                assert (
                    operation.get("requestBody")
                    or "/cancel/" in path
                    or "claim/" in path
                    or ("/resume/" in path)
                ), (method, path)


def test_the_docs_are_served_from_our_own_static_files(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist" in html
    assert "cdn." not in html
    assert "unpkg" not in html


# --- fuzzing ------------------------------------------------------------------------------
# schemathesis' pytest plugin does not run under pytest 9 (it reads Function._nodeid), so
# each operation's strategy is driven by Hypothesis directly; the requests are real HTTP.


def test_fuzz_every_operation_from_the_schema(live_server: Any, django_user_model: Any):
    root = django_user_model.objects.create_superuser("fuzz", "fuzz@example.com", "x")
    token = Token.objects.create(user=root).key
    services.pipeline_create(spec=GATED)
    # Over HTTP, against a live server, as an integration would call it.
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json").exclude(
        path_regex="^/api/v1/webhooks"
    )
    headers = {"Authorization": f"Token {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 23  # the DESIGN.md table, handoffs, break-claim; webhooks aside
    failures: list[str] = []

    def fuzz(operation: Any, path_parameters: dict[str, Any] | None) -> None:
        @given(case=operation.as_strategy(path_parameters=path_parameters))
        @settings(
            max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                headers=headers, checks=[not_a_server_error, response_schema_conformance]
            )

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label} {path_parameters or ''}: {exc}")

    for operation in operations:
        # Random ids and names mostly find nothing (404); a second pass aims at real
        # objects: a fresh run waiting at its review task each time.
        fuzz(operation, None)
        if "{" in operation.path:
            run = drive(services.run_start(pipeline="gated", inputs={"version": "1"}))
            real = {"name": "gated", "id": run.pk}
            if "/tasks/" in operation.path:
                real["id"] = HumanTask.objects.get(run=run).pk
            fuzz(operation, real)
    assert not failures, "\n\n".join(failures)
