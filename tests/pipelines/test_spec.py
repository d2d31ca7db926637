"""Parsing and validating pipeline specs (pure: no database, no Celery)."""

import json
from pathlib import Path
from typing import Any

import pytest

import pipelines.demo
from pipelines.errors import InvalidInput, SpecError
from pipelines.spec import PipelineSpec, When, parse_spec, validate_inputs
from pipelines.spec_text import load_text

DEMO_FILES = sorted(Path(pipelines.demo.__file__).parent.glob("*.yaml"))


def step(name: str, type: str = "noop", **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": type, **fields}


def spec_data(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "test-pipeline", "steps": list(steps), **extra}


def build(*steps: dict[str, Any], **extra: Any) -> PipelineSpec:
    return parse_spec(spec_data(*steps, **extra))


def spec_errors(*steps: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as caught:
        build(*steps, **extra)
    return caught.value.errors


def places(errors: list[dict[str, Any]]) -> set[tuple[Any, Any]]:
    return {(error["step"], error["field"]) for error in errors}


YAML_SPEC = """
name: deploy
description: Build, then deploy.
input_schema: {type: object, required: [version], properties: {version: {type: string}}}
steps:
  - {name: build, type: python, config: {callable: pipelines.demo.steps.build}}
  - name: deploy
    type: python
    after: [build]
    config: {callable: pipelines.demo.steps.deploy}
    retries: 3
    retry_backoff_s: 5
    on_failure: skip_downstream
    when: {step: build, path: sha, exists: true}
"""

JSON_SPEC = """
{
  "name": "deploy",
  "description": "Build, then deploy.",
  "input_schema": {"type": "object", "required": ["version"],
                   "properties": {"version": {"type": "string"}}},
  "steps": [
    {"name": "build", "type": "python", "config": {"callable": "pipelines.demo.steps.build"}},
    {"name": "deploy", "type": "python", "after": ["build"],
     "config": {"callable": "pipelines.demo.steps.deploy"},
     "retries": 3, "retry_backoff_s": 5, "on_failure": "skip_downstream",
     "when": {"step": "build", "path": "sha", "exists": true}}
  ]
}
"""


def test_yaml_and_json_parse_to_the_same_spec():
    from_yaml = parse_spec(load_text(YAML_SPEC))
    from_json = parse_spec(load_text(JSON_SPEC))

    assert from_yaml == from_json
    deploy = from_yaml.by_name["deploy"]
    assert deploy.after == ("build",)
    assert deploy.retries == 3
    assert deploy.on_failure == "skip_downstream"
    assert deploy.when == When(step="build", path="sha", operator="exists", value=True)


@pytest.mark.parametrize(
    "data",
    [
        # Python's json.dumps escapes non-ASCII as \uXXXX (surrogate pairs above the BMP),
        # writes small and large floats in exponent form, and may indent with tabs.
        {
            "name": "p",
            "description": "ship it \U0001f680",
            "steps": [{"name": "a", "type": "noop"}],
        },
        {"name": "p", "steps": [{"name": "a", "type": "noop", "retry_backoff_s": 1e-05}]},
    ],
    ids=["non-bmp-escape", "exponent-float"],
)
def test_load_text_reads_json_written_by_json_dumps(data):
    assert load_text(json.dumps(data)) == data


def test_load_text_reads_tab_indented_json():
    data = {"name": "p", "steps": [{"name": "a", "type": "noop"}]}

    assert load_text(json.dumps(data, indent="\t")) == data


def test_load_text_refuses_malformed_text():
    with pytest.raises(SpecError, match="not valid YAML/JSON"):
        load_text("steps: [unclosed")


def test_duplicate_step_names_are_refused():
    errors = spec_errors(step("a"), step("a"))

    assert places(errors) == {("a", "name")}
    assert "duplicate" in errors[0]["message"]


def test_unknown_after_is_refused():
    errors = spec_errors(step("a"), step("b", after=["nope"]))

    assert places(errors) == {("b", "after")}
    assert "'nope'" in errors[0]["message"]


def test_cycle_is_refused_and_named():
    with pytest.raises(SpecError) as caught:
        build(step("a", after=["c"]), step("b", after=["a"]), step("c", after=["b"]))

    assert places(caught.value.errors) == {("a", "after")}
    assert "cycle: a -> b -> c -> a" in caught.value.message


def test_cycle_behind_an_entry_step_names_only_the_loop():
    errors = spec_errors(
        step("start"),
        step("b", after=["start", "d"]),
        step("c", after=["b"]),
        step("d", after=["c"]),
    )

    assert [e["message"] for e in errors] == ["cycle: b -> c -> d -> b"]


def test_unknown_step_type_lists_the_known_types():
    errors = spec_errors(step("a", type="teleport"))

    assert places(errors) == {("a", "type")}
    for known in ("fail", "http", "noop", "python", "sleep"):
        assert known in errors[0]["message"]


def test_sleep_without_seconds_breaks_its_config_schema():
    errors = spec_errors(step("nap", type="sleep", config={}))

    assert places(errors) == {("nap", "config")}
    assert "'seconds' is a required property" in errors[0]["message"]


def test_config_field_of_wrong_type_is_named():
    errors = spec_errors(step("nap", type="sleep", config={"seconds": "ten"}))

    assert places(errors) == {("nap", "config.seconds")}


@pytest.mark.parametrize(
    "path",
    ["os.system", "pipelines.demonic.run", "pipelines.services.run_start"],
)
def test_python_callable_outside_the_allowed_modules_is_refused(path):
    errors = spec_errors(step("a", type="python", config={"callable": path}))

    assert places(errors) == {("a", "config")}
    assert "outside the allowed modules" in errors[0]["message"]


def test_python_callable_that_does_not_exist_is_refused():
    errors = spec_errors(step("a", type="python", config={"callable": "pipelines.demo.steps.nope"}))

    assert places(errors) == {("a", "config")}
    assert "cannot import" in errors[0]["message"]


def test_allowed_python_callable_is_accepted():
    spec = build(step("a", type="python", config={"callable": "pipelines.demo.steps.count_words"}))

    assert spec.by_name["a"].config == {"callable": "pipelines.demo.steps.count_words"}


def test_when_on_a_step_that_is_not_upstream_is_refused():
    errors = spec_errors(
        step("a"),
        step("b"),
        step("c", after=["a"], when={"step": "b", "path": "x", "equals": 1}),
    )

    assert places(errors) == {("c", "when.step")}


def test_when_on_a_transitive_upstream_step_is_accepted():
    spec = build(
        step("a"),
        step("b", after=["a"]),
        step("c", after=["b"], when={"step": "a", "path": "x", "in": [1, 2]}),
    )

    assert spec.by_name["c"].when == When(step="a", path="x", operator="in", value=[1, 2])


def test_several_problems_are_reported_together():
    errors = spec_errors(
        step("a", after=["ghost"]),
        step("b", type="teleport"),
        step("c", type="sleep"),
        step("d", type="python", config={"callable": "os.system"}),
    )

    assert places(errors) == {("a", "after"), ("b", "type"), ("c", "config"), ("d", "config")}


def test_step_fields_are_checked_against_the_step_schema():
    errors = spec_errors(step("a", on_failure="explode", retries=-1, colour="red"))

    assert places(errors) == {("a", ""), ("a", "on_failure"), ("a", "retries")}


def test_a_queue_names_where_an_automatic_step_runs():
    spec = build(step("crunch", queue="cpu"), step("light", after=["crunch"]))
    assert spec.by_name["crunch"].queue == "cpu"
    assert spec.by_name["light"].queue == ""

    assert places(spec_errors(step("a", queue="no spaces"))) == {("a", "queue")}
    (error,) = spec_errors(
        step("b", type="approval", queue="cpu", config={"assignee_role": "reviewers"})
    )
    assert (error["step"], error["field"]) == ("b", "queue")
    assert error["message"] == "'approval' steps wait for people and run on no queue"


def test_missing_steps_is_refused():
    with pytest.raises(SpecError) as caught:
        parse_spec({"name": "p"})

    assert "'steps' is a required property" in caught.value.errors[0]["message"]


INPUT_SCHEMA = {
    "type": "object",
    "required": ["version"],
    "properties": {"version": {"type": "string"}, "count": {"type": "integer"}},
}


def test_validate_inputs_accepts_matching_inputs():
    spec = build(step("a"), input_schema=INPUT_SCHEMA)

    validate_inputs(spec, {"version": "1.0", "count": 2})


def test_validate_inputs_names_each_bad_field():
    spec = build(step("a"), input_schema=INPUT_SCHEMA)

    with pytest.raises(InvalidInput) as caught:
        validate_inputs(spec, {"count": "two"})

    details = {d["field"]: d["message"] for d in caught.value.details}
    assert details == {
        "version": "'version' is a required property",
        "count": "'two' is not of type 'integer'",
    }


def test_validate_inputs_refuses_a_non_object():
    spec = build(step("a"))

    with pytest.raises(InvalidInput, match="JSON object"):
        validate_inputs(spec, ["version"])


@pytest.mark.parametrize(
    ("operator", "value", "outputs", "expected"),
    [
        ("equals", "prod", {"env": {"name": "prod"}}, True),
        ("equals", "prod", {"env": {"name": "dev"}}, False),
        ("equals", "prod", {"env": {}}, False),
        ("not_equals", "prod", {"env": {"name": "dev"}}, True),
        ("not_equals", "prod", None, True),
        ("in", ["prod", "staging"], {"env": {"name": "staging"}}, True),
        ("in", ["prod", "staging"], {"env": {"name": "dev"}}, False),
        ("in", ["prod", "staging"], None, False),
        ("not_in", ["prod"], {"env": {"name": "dev"}}, True),
        ("not_in", ["prod"], {"env": {"name": "prod"}}, False),
        ("not_in", ["prod"], {"env": "flat"}, True),
        ("exists", True, {"env": {"name": None}}, True),
        ("exists", True, {"env": {}}, False),
        ("exists", True, None, False),
        ("exists", False, {"env": {}}, True),
        ("exists", False, {"env": {"name": "prod"}}, False),
    ],
)
def test_when_evaluate(operator, value, outputs, expected):
    when = When(step="choose", path="env.name", operator=operator, value=value)

    assert when.evaluate(outputs) is expected


def test_when_without_path_tests_the_step_output_itself():
    when = When(step="choose", path="", operator="exists", value=True)

    assert when.evaluate({}) is True
    assert when.evaluate(None) is False


def diamond() -> PipelineSpec:
    return build(
        step("join", after=["left", "right"]),
        step("right", after=["start"]),
        step("left", after=["start"]),
        step("start"),
        step("tail", after=["join"]),
        step("alone"),
    )


def test_order_is_topological():
    spec = diamond()

    order = spec.order
    assert sorted(order) == sorted(spec.by_name)
    for name in order:
        for upstream in spec.by_name[name].after:
            assert order.index(upstream) < order.index(name)


def test_descendants_ancestors_and_terminal():
    spec = diamond()

    assert spec.descendants("start") == {"left", "right", "join", "tail"}
    assert spec.descendants("left") == {"join", "tail"}
    assert spec.descendants("tail") == set()
    assert spec.ancestors("tail") == {"start", "left", "right", "join"}
    assert spec.ancestors("start") == set()
    assert set(spec.terminal) == {"tail", "alone"}


def test_there_are_demo_specs():
    assert DEMO_FILES


@pytest.mark.parametrize("path", DEMO_FILES, ids=lambda p: p.name)
def test_demo_spec_parses(path):
    spec = parse_spec(load_text(path.read_text()))

    assert spec.name
    assert spec.steps
