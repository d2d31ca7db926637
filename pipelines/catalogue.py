"""What integrators read about specs: the step types, a spec's JSON Schema, a dry-run check."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from django.utils.safestring import SafeString

from pipelines import dag, registry, spec_lines
from pipelines.errors import SpecError
from pipelines.spec import SPEC_SCHEMA, STEP_SCHEMA, PipelineSpec, parse_spec
from pipelines.spec_text import load_text

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def step_type_entry(kind: registry.StepType) -> dict[str, Any]:
    return {
        "name": kind.name,
        "description": kind.description,
        "interactive": kind.interactive,
        "config_schema": copy.deepcopy(kind.config_schema),
        "example": copy.deepcopy(kind.example),
    }


def step_types() -> list[dict[str, Any]]:
    """Every registered step type, by name."""
    return [step_type_entry(kind) for kind in registry.all_types()]


def _config_ref(name: str) -> str:
    return f"config.{name}"


def spec_schema(schema_id: str = "") -> dict[str, Any]:
    """The JSON Schema (2020-12) of a whole spec: SPEC_SCHEMA, with each step held to
    STEP_SCHEMA and its type's config schema.

    Built from the dictionaries the loader itself uses, at each call, so a key added to
    either (or a step type registered) shows here without more code. What it cannot say
    (cycles, unknown `after` names, duplicate names, the types' extra checks, callables
    that do not resolve) only the loader and POST /api/v1/pipelines/validate/ find.
    """
    kinds = registry.all_types()
    step = copy.deepcopy(STEP_SCHEMA)
    step["properties"]["type"] = {
        "enum": [kind.name for kind in kinds],
        "description": "A registered step type (GET /api/v1/step-types/).",
    }
    branches = []
    for kind in kinds:
        then: dict[str, Any] = {
            "properties": {"config": {"$ref": f"#/$defs/{_config_ref(kind.name)}"}}
        }
        if kind.config_schema.get("required"):
            then["required"] = ["config"]  # an absent config is read as {}
        if kind.interactive:
            then["not"] = {"required": ["queue"]}  # people run on no queue
        branches.append(
            {
                "if": {"properties": {"type": {"const": kind.name}}, "required": ["type"]},
                "then": then,
            }
        )
    step["allOf"] = branches
    root = copy.deepcopy(SPEC_SCHEMA)
    root["properties"]["steps"] = {**root["properties"]["steps"], "items": {"$ref": "#/$defs/step"}}
    defs = {
        **root.pop("$defs", {}),
        "step": step,
        **{_config_ref(kind.name): copy.deepcopy(kind.config_schema) for kind in kinds},
    }
    head: dict[str, Any] = {"$schema": DIALECT}
    if schema_id:
        head["$id"] = schema_id
    head["title"] = "Firefly pipeline spec"
    return {**head, **root, "$defs": defs}


@dataclass(frozen=True)
class Checked:
    """A spec checked without saving: the parsed spec, or the loader's errors."""

    spec: PipelineSpec | None
    # The loader's {step, field, message}, each with the `line` of the text it is about
    # (None when the spec came as an object, or no line could be told).
    errors: list[dict[str, Any]] = field(default_factory=list)
    # What was read (the object to save as a version), when it could be read.
    data: Any = None

    @property
    def valid(self) -> bool:
        return self.spec is not None

    def svg(self) -> SafeString | None:
        return dag.render_svg(self.spec) if self.spec is not None else None

    def picture(self) -> dict[str, Any] | None:
        """The DAG picture: the SVG the pages show and each step's place in it."""
        if self.spec is None:
            return None
        placed = dag.layout(self.spec)
        nodes = [
            {
                "name": name,
                "type": self.spec.by_name[name].type,
                "interactive": self.spec.by_name[name].interactive,
                "after": list(self.spec.by_name[name].after),
                "column": placed[name][0],
                "row": placed[name][1],
            }
            for name in self.spec.order
        ]
        return {"svg": str(self.svg()), "order": list(self.spec.order), "nodes": nodes}


def check(spec: Any) -> Checked:
    """Read and validate a spec (YAML or JSON text, or its parsed data) as loading it
    would: the same `load_text` and `parse_spec`, the same errors; nothing is saved."""
    root = None
    try:
        if isinstance(spec, str):
            data = load_text(spec)
            # load_text read it within its bounds: composing again for the marks is safe.
            root = spec_lines.compose(spec)
        else:
            data = spec
        return Checked(parse_spec(data), data=data)
    except SpecError as exc:
        errors = [dict(error) for error in exc.errors]
        if isinstance(spec, str):
            return Checked(None, spec_lines.with_lines(root, errors))
        return Checked(None, [{**error, "line": None} for error in errors])
