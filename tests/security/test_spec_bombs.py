"""Hostile specs, bodies and patterns: each refused with a clear 400, leaving nothing behind."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from approvals.models import HumanTask
from pipelines import services
from pipelines.models import Pipeline, Run, SecurityEvent
from tests.api.conftest import GATED, error_of
from tests.approvals.conftest import drive
from tokens.services import token_create

pytestmark = pytest.mark.django_db

V1 = "/api/v1"

BILLION_LAUGHS = """\
name: laughs
steps: [{name: a, type: noop}]
description: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

# Backtracks exponentially under Python's re: 'a' * 50 + '!' would never finish.
CATASTROPHIC = "^(a+)+$"
EVIL_INPUT = "a" * 50 + "!"


def api(user: Any) -> APIClient:
    client = APIClient()
    _, key = token_create(user=user, name="tests")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def post_spec(user: Any, spec: Any) -> Any:
    body = {"spec": spec, "member_role": "starter"}
    return api(user).post(f"{V1}/pipelines/", body, format="json")


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def spec_with(**extra: Any) -> dict[str, Any]:
    return {"name": "hostile", "steps": [{"name": "a", "type": "noop"}], **extra}


def refused_spec(response: Any, *words: str) -> str:
    message = error_of(response, 400, "invalid_spec")["message"]
    for word in words:
        assert word in message, message
    assert not Pipeline.objects.exists()
    return str(message)


# --- YAML aliases and anchors -----------------------------------------------------------


def test_a_yaml_alias_bomb_is_refused_before_it_expands(users):
    started = time.monotonic()
    response = post_spec(users["boss"], BILLION_LAUGHS)

    refused_spec(response, "anchors", "not allowed", "line 3")
    assert time.monotonic() - started < 2
    event = SecurityEvent.objects.get(event="spec.refused")
    assert event.actor == users["boss"]
    assert "anchor" in event.reason


def test_even_one_harmless_anchor_or_alias_is_refused(users):
    anchored = "name: x\nsteps:\n  - &step {name: a, type: noop}\n"
    refused_spec(post_spec(users["boss"], anchored), "an anchor (&)")
    aliased = "name: x\ndescription: *nothing\nsteps: [{name: a, type: noop}]\n"
    refused_spec(post_spec(users["boss"], aliased), "an alias (*)")


def test_load_pipeline_refuses_the_alias_bomb(tmp_path: Path):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)

    with pytest.raises(CommandError, match="anchors"):
        call_command("load_pipeline", str(path))
    assert not Pipeline.objects.exists()


# --- size, node count and depth ---------------------------------------------------------


def test_a_spec_over_the_size_limit_is_refused(users, settings):
    padding = "x" * (settings.FIREFLY_SPEC_MAX_BYTES + 1)
    as_yaml = f"name: big\ndescription: {padding}\nsteps: [{{name: a, type: noop}}]\n"
    refused_spec(post_spec(users["boss"], as_yaml), "bytes; the limit is 262,144")
    # The same spec as a JSON object in the body (under the body's own limit).
    as_object = spec_with(description=padding)
    refused_spec(post_spec(users["boss"], as_object), "bytes as JSON; the limit is 262,144")


def test_a_spec_with_too_many_nodes_is_refused(users, settings, tmp_path: Path):
    many = list(range(settings.FIREFLY_SPEC_MAX_NODES))
    spec = spec_with(input_schema={"type": "object", "properties": {"n": {"enum": many}}})
    refused_spec(post_spec(users["boss"], spec), "more than 10,000 nodes")
    text = "name: many\nsteps: [{name: a, type: noop}]\ndescription: [" + "1," * 10_001 + "1]\n"
    refused_spec(post_spec(users["boss"], text), "more than 10,000 nodes")
    path = tmp_path / "many.yaml"
    path.write_text(text)
    with pytest.raises(CommandError, match="more than 10,000 nodes"):
        call_command("load_pipeline", str(path))
    assert not Pipeline.objects.exists()


@pytest.mark.parametrize("depth", [65, 990, 100_000])
def test_deep_yaml_or_json_spec_text_is_a_400(users, depth):
    as_yaml = "name: deep\nsteps: [{name: a, type: noop}]\ndescription: " + "[" * depth
    as_yaml += "1" + "]" * depth + "\n"
    refused_spec(post_spec(users["boss"], as_yaml), "nested deeper than 64 levels")
    as_json = json.dumps(spec_with(description="@")).replace('"@"', "[" * depth + "]" * depth)
    refused_spec(post_spec(users["boss"], as_json), "nested deeper than 64 levels")


def test_load_pipeline_refuses_a_deep_file(tmp_path: Path):
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(spec_with()).replace('"noop"}', '"noop", "x": ' + "[" * 5000))
    path.write_text(path.read_text() + "]" * 5000 + "}]}")
    with pytest.raises(CommandError, match="nested deeper than 64 levels"):
        call_command("load_pipeline", str(path))
    assert not Pipeline.objects.exists()


def test_a_spec_nested_just_past_the_limit_in_the_body_is_refused(users):
    # {"spec": {"description": [[...]]}}: 63 lists there make a body 65 levels deep.
    response = post_spec(users["boss"], spec_with(description=nested(63)))
    assert "nested deeper than 64 levels" in error_of(response, 400, "malformed")["message"]
    assert not Pipeline.objects.exists()


# --- deep or large JSON bodies on every endpoint ------------------------------------------


def _deep_body(depth: int) -> bytes:
    return b'{"spec": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [65, 990, 200_000])
def test_a_deep_json_body_is_a_400_on_every_endpoint(users, depth):
    services.pipeline_create(member_role="starter", spec=GATED)
    run = drive(services.run_start(pipeline="gated", inputs={"version": "1"}, actor=users["r1"]))
    task = HumanTask.objects.get(run=run)
    endpoints = [
        "/pipelines/",
        "/pipelines/gated/runs/",
        f"/runs/{run.pk}/fork/",
        f"/tasks/{task.pk}/approve/",
        f"/tasks/{task.pk}/reject/",
        f"/tasks/{task.pk}/rollback/",
        f"/tasks/{task.pk}/complete/",
        "/webhooks/",
    ]
    runs = Run.objects.count()
    for path in endpoints:
        response = api(users["boss"]).post(
            V1 + path, _deep_body(depth), content_type="application/json"
        )
        message = error_of(response, 400, "malformed")["message"]
        assert "nested deeper than 64 levels" in message, path
    assert Run.objects.count() == runs
    assert HumanTask.objects.get(pk=task.pk).status == HumanTask.Status.OPEN


def test_a_body_over_the_limit_is_a_400(users, settings):
    settings.FIREFLY_API_MAX_BODY_BYTES = 1000
    body = json.dumps({"inputs": {"x": "y" * 1000}})
    response = api(users["starter"]).post(
        f"{V1}/pipelines/gated/runs/", body, content_type="application/json"
    )
    assert "larger than 1,000 bytes" in error_of(response, 400, "malformed")["message"]


def test_nan_and_infinity_are_not_json(users):
    services.pipeline_create(member_role="starter", spec=GATED)
    response = api(users["starter"]).post(
        f"{V1}/pipelines/gated/runs/",
        '{"inputs": {"version": NaN}}',
        content_type="application/json",
    )
    error_of(response, 400, "malformed")
    assert not Run.objects.exists()


def test_run_inputs_over_the_limit_are_refused(users, settings):
    services.pipeline_create(member_role="starter", spec=GATED)
    inputs = {"version": "1", "blob": "x" * settings.FIREFLY_INPUTS_MAX_BYTES}
    response = api(users["starter"]).post(
        f"{V1}/pipelines/gated/runs/", {"inputs": inputs}, format="json"
    )
    message = error_of(response, 400, "invalid")["message"]
    assert "Run inputs: 262,1" in message
    assert "bytes of JSON, over the limit of 262,144" in message
    assert not Run.objects.exists()


# --- patterns -----------------------------------------------------------------------------


def test_a_pattern_re2_cannot_run_is_refused_at_load(users):
    backreference = spec_with(
        input_schema={"type": "object", "properties": {"code": {"pattern": r"^(a)\1$"}}}
    )
    message = refused_spec(post_spec(users["boss"], backreference), "invalid escape sequence")
    assert "input_schema.properties.code.pattern" in message
    lookahead = spec_with(
        input_schema={"type": "object", "patternProperties": {"(?=x)": {"type": "string"}}}
    )
    refused_spec(post_spec(users["boss"], lookahead), "input_schema.patternProperties")


def test_a_form_schema_pattern_re2_cannot_run_is_refused_at_load(users):
    form = {"type": "object", "properties": {"code": {"pattern": r"(?<!x)y"}}}
    spec = spec_with(
        steps=[{"name": "ask", "type": "input", "config": {"assignee": "r1", "form_schema": form}}]
    )
    message = refused_spec(post_spec(users["boss"], spec), "steps[ask].config")
    assert "form_schema.properties.code.pattern" in message


def test_a_catastrophic_pattern_does_not_hang_a_run_start(users):
    spec = spec_with(
        input_schema={
            "type": "object",
            "properties": {"code": {"type": "string", "pattern": CATASTROPHIC}},
            "patternProperties": {CATASTROPHIC: {"type": "integer"}},
            "additionalProperties": False,
        }
    )
    assert post_spec(users["boss"], spec).status_code == 201

    started = time.monotonic()
    response = api(users["starter"]).post(
        f"{V1}/pipelines/hostile/runs/",
        {"inputs": {"code": EVIL_INPUT, EVIL_INPUT: 1}},
        format="json",
    )
    elapsed = time.monotonic() - started

    message = error_of(response, 400, "invalid")["message"]
    assert "does not match" in message
    assert "does not match any of the regexes" in message  # nor the patternProperties
    assert elapsed < 2
    assert not Run.objects.exists()


def test_a_catastrophic_pattern_does_not_hang_a_form(users, make_pipeline):
    form = {"type": "object", "properties": {"code": {"type": "string", "pattern": CATASTROPHIC}}}
    name = make_pipeline(
        [{"name": "ask", "type": "input", "config": {"assignee": "r1", "form_schema": form}}]
    )
    run = drive(services.run_start(pipeline=name, inputs={}, actor=users["starter"]))
    task = HumanTask.objects.get(run=run)

    started = time.monotonic()
    response = api(users["r1"]).post(
        f"{V1}/tasks/{task.pk}/complete/", {"data": {"code": EVIL_INPUT}}, format="json"
    )
    assert time.monotonic() - started < 2
    assert "does not match" in error_of(response, 400, "invalid")["message"]
    assert HumanTask.objects.get(pk=task.pk).status == HumanTask.Status.OPEN


def test_a_catastrophic_pattern_does_not_hang_the_task_form_page(client, users, make_pipeline):
    form = {"type": "object", "properties": {"code": {"type": "string", "pattern": CATASTROPHIC}}}
    name = make_pipeline(
        [{"name": "ask", "type": "input", "config": {"assignee": "r1", "form_schema": form}}]
    )
    task = HumanTask.objects.get(run=drive(services.run_start(pipeline=name, inputs={})))
    client.force_login(users["r1"])
    url = f"/tasks/{task.pk}/complete/"

    started = time.monotonic()
    response = client.post(url, {"code": EVIL_INPUT}, HTTP_HX_REQUEST="true")
    assert time.monotonic() - started < 2
    assert response.status_code == 400
    assert "does not match" in response.content.decode()
    huge = client.post(url, {"code": "a" * 300_000}, HTTP_HX_REQUEST="true")
    assert huge.status_code == 400
    assert "over the limit of 262,144" in huge.content.decode()
    assert HumanTask.objects.get(pk=task.pk).status == HumanTask.Status.OPEN


def test_a_catastrophic_pattern_does_not_hang_the_start_page(client, users):
    spec = spec_with(
        input_schema={
            "type": "object",
            "properties": {"code": {"type": "string", "pattern": CATASTROPHIC}},
        }
    )
    services.pipeline_create(member_role="starter", spec=spec)
    client.force_login(users["starter"])

    started = time.monotonic()
    response = client.post(
        "/pipelines/hostile/start/", {"code": EVIL_INPUT}, HTTP_HX_REQUEST="true"
    )
    assert time.monotonic() - started < 2
    assert response.status_code == 400
    assert "does not match" in response.content.decode()
    huge = client.post("/pipelines/hostile/start/", {"code": "a" * 300_000}, HTTP_HX_REQUEST="true")
    assert huge.status_code == 400
    assert "over the limit of 262,144" in huge.content.decode()
    assert not Run.objects.exists()


def test_spec_text_with_a_control_character_is_a_400(users):
    # The YAML reader refuses it while the loader is built: found by the schema fuzzing.
    refused_spec(post_spec(users["boss"], "7V\x1c"), "not valid YAML/JSON")


@pytest.mark.parametrize(
    ("input_schema", "reason"),
    [
        ({"$ref": "https://attacker.example/schema.json"}, "points outside the schema"),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "without end"),
        ({"$ref": "#/$defs/nothing"}, "cannot be resolved"),
        (
            {"unevaluatedProperties": False, "patternProperties": {"^x": {}}},
            "unevaluatedProperties cannot be used with patternProperties",
        ),
    ],
)
def test_an_input_schema_that_cannot_be_followed_is_refused_at_load(users, input_schema, reason):
    refused_spec(post_spec(users["boss"], spec_with(input_schema=input_schema)), reason)


def test_a_loop_the_load_did_not_reach_is_a_400_at_run_start(users):
    loop = {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}}
    spec = spec_with(input_schema={**loop, "properties": {"x": {"$ref": "#/$defs/a"}}})
    assert post_spec(users["boss"], spec).status_code == 201

    response = api(users["starter"]).post(
        f"{V1}/pipelines/hostile/runs/", {"inputs": {"x": 1}}, format="json"
    )
    assert "refers to itself without end" in error_of(response, 400, "invalid")["message"]
    assert not Run.objects.exists()
