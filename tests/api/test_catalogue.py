"""The catalogue for integrators: step types, the spec's JSON Schema, checking a spec."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from django.conf import settings
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from pipelines import registry
from pipelines.errors import SpecError
from pipelines.models import Pipeline, PipelineVersion
from pipelines.spec import SPEC_SCHEMA, parse_spec
from tests.api.conftest import error_of

DEMO = sorted((Path(settings.BASE_DIR) / "pipelines" / "demo").glob("*.yaml"))


def _spec(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "broken", "steps": list(steps), **extra}


def _gate(**config: Any) -> dict[str, Any]:
    return {"name": "review", "type": "approval", "config": {"assignee": "r1", **config}}


# Each spec breaks a rule a JSON Schema can state. (A schema cannot see cycles, unknown
# `after` names, duplicate names or callables that do not resolve: only the loader can.)
BROKEN: dict[str, dict[str, Any]] = {
    "unknown step type": _spec({"name": "a", "type": "teleport"}),
    "approval quorum below one": _spec(_gate(quorum=0)),
    "approval quorum not a number": _spec(_gate(quorum="two")),
    "approval quorum above a hundred": _spec(_gate(quorum=101)),
    "approval deadline of zero hours": _spec(_gate(timeout_hours=0)),
    "approval on_timeout unknown": _spec(_gate(on_timeout="later")),
    "approval assignee not a string": _spec(_gate(assignee=["r1", "r2"])),
    "approval on a queue": _spec({**_gate(), "queue": "fast"}),
    "approval unknown config key": _spec(_gate(quorum=2, approvers=3)),
    "input without form_schema": _spec(
        {"name": "fill", "type": "input", "config": {"assignee": "r1"}}
    ),
    "input form_schema not an object": _spec(
        {"name": "fill", "type": "input", "config": {"assignee": "r1", "form_schema": "amount"}}
    ),
    "choice without options": _spec(
        {"name": "pick", "type": "choice", "config": {"assignee": "r1"}}
    ),
    "choice with no options": _spec(
        {"name": "pick", "type": "choice", "config": {"assignee": "r1", "options": []}}
    ),
    "choice with repeated options": _spec(
        {"name": "pick", "type": "choice", "config": {"assignee": "r1", "options": ["a", "a"]}}
    ),
    "choice with a quorum": _spec(
        {
            "name": "pick",
            "type": "choice",
            "config": {"assignee": "r1", "options": ["a"], "quorum": 2},
        }
    ),
    "sleep without its config": _spec({"name": "nap", "type": "sleep"}),
    "http with an unknown method": _spec(
        {"name": "call", "type": "http", "config": {"url": "https://x.example", "method": "FETCH"}}
    ),
    "step key misspelt": _spec({"name": "a", "type": "noop", "depends_on": ["b"]}),
    "spec key misspelt": _spec({"name": "a", "type": "noop"}, stages=[]),
    "no steps": {"name": "broken", "steps": []},
    "no name": {"steps": [{"name": "a", "type": "noop"}]},
    "pipeline name with spaces": {"name": "Not A Slug", "steps": [{"name": "a", "type": "noop"}]},
    "on_failure unknown": _spec({"name": "a", "type": "noop", "on_failure": "explode"}),
    "retries negative": _spec({"name": "a", "type": "noop", "retries": -1}),
    "when without its step": _spec(
        {"name": "a", "type": "noop"}, {"name": "b", "type": "noop", "after": ["a"], "when": {}}
    ),
    "retention of zero days": _spec({"name": "a", "type": "noop"}, retention={"runs_days": 0}),
}


@pytest.fixture
def anyone(users: dict[str, Any], client_for: Callable[[Any], APIClient]) -> APIClient:
    return client_for(users["starter"])


@pytest.fixture
def author(users: dict[str, Any], client_for: Callable[[Any], APIClient]) -> APIClient:
    return client_for(users["boss"])


@pytest.fixture
def spec_schema(db: Any) -> dict[str, Any]:
    response = APIClient().get("/api/v1/spec-schema/")
    assert response.status_code == 200, response.content
    return dict(response.json())


# --- step types -------------------------------------------------------------------------


def test_step_types_list_every_registered_type_with_a_valid_example(anyone: APIClient) -> None:
    response = anyone.get("/api/v1/step-types/")
    assert response.status_code == 200
    listed = {entry["name"]: entry for entry in response.json()}
    assert sorted(listed) == registry.names()
    for name in ("approval", "input", "choice", "noop", "python", "http", "handoff"):
        assert name in listed
    assert listed["approval"]["interactive"] is True
    assert listed["http"]["interactive"] is False
    assert "quorum" in listed["approval"]["config_schema"]["properties"]
    assert "form_schema" in listed["input"]["config_schema"]["required"]
    for name, entry in listed.items():
        assert entry["description"], name
        jsonschema.Draft202012Validator.check_schema(entry["config_schema"])
        jsonschema.validate(entry["example"], entry["config_schema"])
        # And the loader itself takes it, extra checks included.
        step = {"name": "s", "type": name, "config": entry["example"]}
        parse_spec({"name": "example", "steps": [step]})


def test_step_types_need_an_account(db: Any) -> None:
    error_of(APIClient().get("/api/v1/step-types/"), 401)


# --- the spec's JSON Schema -------------------------------------------------------------


def test_spec_schema_is_a_2020_12_schema_built_from_the_registry(
    spec_schema: dict[str, Any],
) -> None:
    assert spec_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert spec_schema["$id"].endswith("/api/v1/spec-schema/")
    jsonschema.Draft202012Validator.check_schema(spec_schema)
    assert set(spec_schema["properties"]) == set(SPEC_SCHEMA["properties"])
    assert spec_schema["$defs"]["step"]["properties"]["type"]["enum"] == registry.names()
    for name in registry.names():
        assert spec_schema["$defs"][f"config.{name}"] == registry.get(name).config_schema


def test_spec_schema_follows_keys_added_to_the_spec(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    extended = copy.deepcopy(SPEC_SCHEMA)
    extended["properties"]["schedules"] = {"type": "array"}
    monkeypatch.setattr("pipelines.catalogue.SPEC_SCHEMA", extended)
    schema = APIClient().get("/api/v1/spec-schema/").json()
    assert schema["properties"]["schedules"] == {"type": "array"}


@pytest.mark.parametrize("path", DEMO, ids=[p.stem for p in DEMO])
def test_spec_schema_accepts_every_demo_spec(spec_schema: dict[str, Any], path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    parse_spec(spec)  # the loader takes it
    jsonschema.validate(spec, spec_schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_spec_schema_refuses_each_broken_spec(spec_schema: dict[str, Any], case: str) -> None:
    spec = BROKEN[case]
    with pytest.raises(SpecError):  # the loader refuses it too
        parse_spec(spec)
    validator = jsonschema.Draft202012Validator(spec_schema)
    assert list(validator.iter_errors(spec)), case


def test_broken_list_is_long_enough() -> None:
    assert len(BROKEN) >= 10


# --- checking a spec --------------------------------------------------------------------

GOOD_YAML = """\
name: checked
steps:
  - name: build
    type: noop
  - name: review
    type: approval
    after: [build]
    config:
      assignee_role: reviewers
      quorum: 2
  - name: ship
    type: noop
    after: [review]
"""


def test_validate_answers_the_dag_of_a_good_spec_and_saves_nothing(anyone: APIClient) -> None:
    response = anyone.post("/api/v1/pipelines/validate/", {"spec": GOOD_YAML}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["valid"] is True
    assert body["errors"] == []
    assert body["name"] == "checked"
    assert body["dag"]["order"] == ["build", "review", "ship"]
    nodes = {node["name"]: node for node in body["dag"]["nodes"]}
    assert nodes["review"] == {
        "name": "review",
        "type": "approval",
        "interactive": True,
        "after": ["build"],
        "column": 1,
        "row": 0,
    }
    assert body["dag"]["svg"].startswith("<svg")
    assert not Pipeline.objects.filter(name="checked").exists()


def test_validate_takes_a_json_object_as_creation_does(anyone: APIClient) -> None:
    spec = yaml.safe_load(GOOD_YAML)
    body = anyone.post("/api/v1/pipelines/validate/", {"spec": spec}, format="json").json()
    assert body["valid"] is True


def test_validate_points_at_the_line_of_each_error(anyone: APIClient) -> None:
    text = GOOD_YAML.replace("quorum: 2", "quorum: 0").replace(
        "type: noop\n  - name: rev", "type: nop\n  - name: rev"
    )
    body = anyone.post("/api/v1/pipelines/validate/", {"spec": text}, format="json").json()
    assert body["valid"] is False
    lines = text.splitlines()
    found = {(e["step"], e["field"]): e["line"] for e in body["errors"]}
    assert found[("build", "type")] == 4
    assert lines[3].strip() == "type: nop"
    assert found[("review", "config.quorum")] == 10
    assert lines[9].strip() == "quorum: 0"


def test_validate_points_at_an_unexpected_key(anyone: APIClient) -> None:
    text = GOOD_YAML.replace("    after: [review]\n", "    after: [review]\n    depends: [x]\n")
    body = anyone.post("/api/v1/pipelines/validate/", {"spec": text}, format="json").json()
    assert [(e["step"], e["line"]) for e in body["errors"]] == [("ship", 14)]
    assert text.splitlines()[13].strip() == "depends: [x]"


@pytest.mark.parametrize("case", [*sorted(BROKEN)[:12], "cycle", "unknown upstream"])
def test_validate_answers_the_errors_creating_would(
    author: APIClient, anyone: APIClient, case: str
) -> None:
    spec = {
        **BROKEN,
        "cycle": _spec(
            {"name": "a", "type": "noop", "after": ["b"]},
            {"name": "b", "type": "noop", "after": ["a"]},
        ),
        "unknown upstream": _spec({"name": "a", "type": "noop", "after": ["ghost"]}),
    }[case]
    for sent in (spec, yaml.safe_dump(spec), json.dumps(spec)):
        created = error_of(author.post("/api/v1/pipelines/", {"spec": sent}, format="json"), 400)
        checked = anyone.post("/api/v1/pipelines/validate/", {"spec": sent}, format="json")
        assert checked.status_code == 200
        errors = checked.json()["errors"]
        assert [{k: v for k, v in e.items() if k != "line"} for e in errors] == created["details"]
    assert not PipelineVersion.objects.exists()


def test_validate_needs_an_account(db: Any) -> None:
    response = APIClient().post("/api/v1/pipelines/validate/", {"spec": GOOD_YAML}, format="json")
    error_of(response, 401)


def test_validate_answers_a_pipeline_named_validate_on_get(
    anyone: APIClient, make_pipeline: Callable[..., str]
) -> None:
    make_pipeline([{"name": "a", "type": "noop"}], name="validate")
    response = anyone.get("/api/v1/pipelines/validate/")
    assert response.status_code == 200
    assert response.json()["name"] == "validate"


# --- nasty input: a clear answer, never a 500 --------------------------------------------


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


BOMB = """\
name: bomb
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: [*c, *c, *c, *c, *c, *c, *c, *c, *c]
steps: []
"""


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: x\nsteps:\n  - " + "x" * (300 * 1024), "bytes; the limit is"),
        (_deep(5000), "nested deeper"),
        ("a:\n" + "".join(f"{'  ' * i}b{i}:\n" for i in range(1, 200)), "nested deeper"),
        (BOMB, "anchors and aliases are not allowed"),
        ("steps:\n" + "".join(f"  - {i}\n" for i in range(20_000)), "nodes"),
        ("name: x\n\tsteps: []\n", "not valid YAML"),
        ("name: x\x07\nsteps: []", "not valid YAML"),
        ("- just\n- a list\n", "not of type 'object'"),
        ("", "not of type 'object'"),
        ("{name: x, steps: [}", "not valid YAML"),
    ],
    ids=[
        "huge",
        "deep-json",
        "deep-yaml",
        "bomb",
        "many-nodes",
        "tab",
        "control",
        "list",
        "empty",
        "broken-flow",
    ],
)
def test_validate_refuses_nasty_text_clearly(anyone: APIClient, text: str, says: str) -> None:
    body = json.dumps({"spec": text})
    response = anyone.post("/api/v1/pipelines/validate/", body, content_type="application/json")
    if response.status_code == 400:  # the request body itself was refused by the parser
        assert error_of(response, 400)["message"]
        return
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["valid"] is False
    assert any(says in e["message"] for e in answer["errors"]), answer["errors"]


def test_validate_refuses_a_body_that_is_not_utf8(anyone: APIClient) -> None:
    body = b'{"spec": "name: \xff\xfe"}'
    response = anyone.post("/api/v1/pipelines/validate/", body, content_type="application/json")
    error_of(response, 400)


@pytest.mark.parametrize("spec", [42, None, True, ["name"], "\ud800"])
def test_validate_refuses_what_is_no_spec(anyone: APIClient, spec: Any) -> None:
    body = json.dumps({"spec": spec})  # escaped: a lone surrogate travels as \ud800
    response = anyone.post("/api/v1/pipelines/validate/", body, content_type="application/json")
    if response.status_code == 200:
        assert response.json()["valid"] is False
    else:
        error_of(response, 400)


def test_validate_is_rate_limited(anyone: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "spec_validate": "2/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    answers = [
        anyone.post("/api/v1/pipelines/validate/", {"spec": GOOD_YAML}, format="json")
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
