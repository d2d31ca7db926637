"""The OpenAPI schema validates, the docs are served locally, and fuzzing finds no 500s."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from rest_framework.throttling import SimpleRateThrottle
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.definitions import OPENAPI_30

from approvals.models import HumanTask
from inbound import services as inbound
from inbound.models import InboundHook
from pipelines import services
from tests.api.conftest import GATED
from tests.approvals.conftest import drive
from tokens.services import token_create

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
        # Webhooks have their own test; the spec's JSON Schema is public (editors fetch it).
        if path.startswith("/api/v1/webhooks") or path == "/api/v1/spec-schema/":
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
                    or "/revoke/" in path
                    or "/rotate/" in path
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

# Besides what the schema describes, a body may carry a value nested this deep: Python's
# recursion in json.loads and in anything that walks the value ends near 1,000 levels.
# schemathesis serialises bodies recursively too, so these go out as raw bytes.
HOSTILE_DEPTHS = st.sampled_from([0, 0, 65, 990, 100_000])


def _with_deep_value(body: Any, depth: int) -> bytes:
    deep = "[" * depth + "]" * depth
    if isinstance(body, dict) and body:
        return f'{{"hostile": {deep}, {json.dumps(body)[1:]}'.encode()
    return f'{{"hostile": {deep}}}'.encode()


def test_fuzz_every_operation_from_the_schema(
    live_server: Any, django_user_model: Any, monkeypatch: pytest.MonkeyPatch
):
    # Hundreds of decisions a minute from one user: the rate limits would answer 429
    # (they have a test of their own), and a replayed example would then pass.
    unlimited = dict.fromkeys(SimpleRateThrottle.THROTTLE_RATES, "100000/min")
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", unlimited)
    root = django_user_model.objects.create_superuser("fuzz", "fuzz@example.com", "x")
    _, token = token_create(user=root, name="fuzz")
    # What the second pass of the revoke operation aims at (not the token fuzzing uses).
    spare, _ = token_create(user=root, name="spare")
    services.pipeline_create(member_role="starter", spec=GATED)
    # Over HTTP, against a live server, as an integration would call it.
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    headers = {"Authorization": f"Token {token}"}
    # Revoking goes last: a random id may hit the token the fuzzing itself uses.
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda operation: "/revoke/" in operation.path,
    )
    # The DESIGN.md table, handoffs, break-claim, webhooks, tokens, the catalogue,
    # schedules, inbound hooks.
    assert len(operations) == 51
    failures: list[str] = []
    session = requests.Session()

    def fuzz(operation: Any, path_parameters: dict[str, Any] | None) -> None:
        checks = [not_a_server_error, response_schema_conformance]
        has_body = "requestBody" in operation.definition.raw

        @seed(20261201)
        @given(
            case=operation.as_strategy(path_parameters=path_parameters),
            depth=HOSTILE_DEPTHS if has_body else st.just(0),
        )
        @settings(
            max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: Any, depth: int) -> None:
            if not depth:
                case.call_and_validate(headers=headers, checks=checks)
                return
            response = session.request(
                case.method,
                f"{live_server.url}{case.formatted_path}",
                data=_with_deep_value(case.body, depth),
                headers={**headers, "Content-Type": "application/json"},
                timeout=30,
            )
            case.validate_response(response, checks=checks)

        try:
            check()
        # Collect every operation's failure, then report them all. schemathesis raises its
        # findings as a BaseExceptionGroup, which `except Exception` would let through.
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label} {path_parameters or ''}: {exc}")

    try:
        for operation in operations:
            # Random ids and names mostly find nothing (404); a second pass aims at real
            # objects: a fresh run waiting at its review task each time.
            fuzz(operation, None)
            if "{" in operation.path:
                run = drive(services.run_start(pipeline="gated", inputs={"version": "1"}))
                real = {"name": "gated", "id": run.pk}
                if "/tasks/" in operation.path:
                    real["id"] = HumanTask.objects.get(run=run).pk
                if "/tokens/" in operation.path:
                    real["id"] = spare.pk
                if "/hooks/" in operation.path:
                    hooks = InboundHook.objects.filter(pipeline__name="gated").count()
                    real["id"] = inbound.hook_create(pipeline="gated", name=f"fuzz-{hooks}").pk
                fuzz(operation, real)
    finally:
        # A kept-alive connection keeps a server thread, and its database connection, open.
        session.close()
    assert not failures, "\n\n".join(failures)
