"""Forms built from a JSON Schema, and service refusals shown next to their fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import FireflyError


def field_errors(exc: FireflyError) -> dict[str, list[str]]:
    """InvalidInput.details as {field: [messages]}; "" holds errors about the whole form."""
    found: dict[str, list[str]] = {}
    if isinstance(exc.details, list):
        for item in exc.details:
            if isinstance(item, Mapping):
                found.setdefault(str(item.get("field") or ""), []).append(
                    str(item.get("message", ""))
                )
    return found


@dataclass
class SchemaField:
    name: str
    label: str
    widget: str  # text, integer, number, checkbox, select, date, textarea
    required: bool
    help: str = ""
    options: list[str] = field(default_factory=list)
    value: Any = None
    errors: list[str] = field(default_factory=list)


def schema_fields(
    schema: Mapping[str, Any] | None,
    values: Mapping[str, Any] | None = None,
    errors: Mapping[str, list[str]] | None = None,
) -> list[SchemaField]:
    """Form fields for the top-level properties of a JSON Schema object."""
    schema = schema or {}
    values = values or {}
    errors = errors or {}
    required = set(schema.get("required", []))
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        prop = prop if isinstance(prop, Mapping) else {}
        kind = prop.get("type")
        if "enum" in prop:
            widget = "select"
        elif kind == "boolean":
            widget = "checkbox"
        elif kind in ("integer", "number"):
            widget = kind
        elif prop.get("format") == "date":
            widget = "date"
        elif kind == "string" and (prop.get("maxLength") or 0) > 200:
            widget = "textarea"
        else:
            widget = "text"
        value = values.get(name, prop.get("default"))
        fields.append(
            SchemaField(
                name=name,
                label=str(prop.get("title") or name.replace("_", " ").capitalize()),
                widget=widget,
                required=name in required,
                help=str(prop.get("description", "")),
                options=[str(o) for o in prop.get("enum", [])],
                value="" if value is None else value,
                errors=list(errors.get(name, [])),
            )
        )
    return fields


def parse_schema_form(schema: Mapping[str, Any] | None, post: Mapping[str, Any]) -> dict[str, Any]:
    """Turn posted strings into JSON values; the service's schema check reports what is wrong.

    An unparsable number is passed on as its text so the error names the field.
    """
    schema = schema or {}
    data: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        prop = prop if isinstance(prop, Mapping) else {}
        kind = prop.get("type")
        if kind == "boolean" and "enum" not in prop:
            data[name] = post.get(name) in ("on", "true", "1")
            continue
        raw = post.get(name)
        if raw is None or raw == "":
            continue
        if "enum" in prop:
            data[name] = next((o for o in prop["enum"] if str(o) == raw), raw)
        elif kind == "integer":
            try:
                data[name] = int(raw)
            except ValueError:
                data[name] = raw
        elif kind == "number":
            try:
                number = float(raw)
                data[name] = int(number) if number.is_integer() and "." not in raw else number
            except ValueError:
                data[name] = raw
        else:
            data[name] = raw
    return data
