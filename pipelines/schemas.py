"""JSON Schema validation whose patterns run on RE2, so that no pattern can hang a request."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import re2
from jsonschema import _keywords
from jsonschema.exceptions import ValidationError
from referencing.exceptions import Unresolvable

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is reported to whoever wrote it


class PatternError(ValueError):
    """RE2 cannot compile a pattern (backreferences, lookarounds, a too-large program)."""


def compile_pattern(pattern: str) -> Any:
    """Compile with RE2 (cached by the module): matching takes time linear in the text.

    Python's `re` backtracks, and `^(a+)+$` against 'a' * 50 + '!' would take longer than
    the universe has left; RE2 has no backreferences or lookarounds, which is the price.
    """
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise PatternError(f"pattern {pattern!r} is not supported: {reason}") from None


def _search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        if not _search(pattern, instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")
    except PatternError as exc:  # a schema stored before patterns were checked at load
        yield ValidationError(str(exc))


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            yield ValidationError(str(exc))
            continue
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # jsonschema's own keyword matches patternProperties with `re`: this one with RE2.
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    try:
        extras = [
            key
            for key in instance
            if key not in properties and not any(_search(p, key) for p in patterns)
        ]
    except PatternError as exc:
        yield ValidationError(str(exc))
        return
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            listed = ", ".join(repr(extra) for extra in sorted(extras))
            shown = ", ".join(repr(p) for p in sorted(patterns))
            yield ValidationError(f"{listed} {verb} not match any of the regexes: {shown}")
        else:
            listed = ", ".join(repr(extra) for extra in sorted(extras))
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({listed} {verb} unexpected)"
            )


def _unevaluated_properties(
    validator: Any, unevaluated: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # jsonschema finds the properties patternProperties evaluated with `re`; where a
    # schema has both, it is refused at load (schema_problems) and here.
    if _mentions(validator.schema, "patternProperties"):
        yield ValidationError("unevaluatedProperties cannot be used with patternProperties")
        return
    keyword: Any = _keywords.unevaluatedProperties  # the stubs say it returns None
    yield from keyword(validator, unevaluated, instance, schema)


def _mentions(schema: Any, keyword: str) -> bool:
    todo = [schema]
    while todo:
        item = todo.pop()
        if isinstance(item, Mapping):
            if keyword in item:
                return True
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def _regex_format(instance: object) -> bool:
    if isinstance(instance, str):
        compile_pattern(instance)
    return True


FORMAT_CHECKER = jsonschema.FormatChecker()
FORMAT_CHECKER.checks("regex", raises=PatternError)(_regex_format)

SafeValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties,
    },
)


def validator(schema: Mapping[str, Any] | bool) -> Any:
    """The one way Firefly builds a validator for a schema: RE2 patterns, formats checked."""
    return SafeValidator(schema, format_checker=FORMAT_CHECKER)


class BrokenSchema(ValidationError):
    """The schema itself cannot be followed, whatever the instance."""


def errors(schema: Mapping[str, Any] | bool, instance: Any) -> list[ValidationError]:
    """Each way `instance` breaks `schema`, in path order; a schema that cannot be
    followed (a reference to nowhere, or one that loops without end) is one error more
    rather than a crash."""
    try:
        found = list(validator(schema).iter_errors(instance))
    except RecursionError:
        return [BrokenSchema("the schema refers to itself without end")]
    except Unresolvable as exc:
        return [BrokenSchema(f"the schema has a reference that cannot be resolved: {exc}")]
    return sorted(found, key=lambda error: [str(p) for p in error.absolute_path])


def error_path(error: ValidationError) -> str:
    """Where in the instance an error is, as a dotted path ("" for the instance itself)."""
    return ".".join(str(p) for p in error.absolute_path)


def field_problems(schema: Mapping[str, Any] | bool, instance: Any) -> list[dict[str, str]]:
    """Each way `instance` breaks `schema` as {"field", "message"}, for a form to show.

    A missing required property is reported on the property itself rather than on the
    object that lacks it, so the form shows it next to the empty field.
    """
    problems = []
    for error in errors(schema, instance):
        field = error_path(error)
        if error.validator == "required" and not field:
            field = error.message.split("'")[1] if "'" in error.message else ""
        problems.append({"field": field, "message": error.message})
    return problems


def schema_problems(schema: Any) -> list[tuple[str, str]]:
    """Each way `schema` is not a schema Firefly can use, as (path, message) pairs.

    A valid 2020-12 schema is also refused when one of its patterns is beyond RE2, when it
    points outside itself ($ref to another document, which would be fetched or fail at run
    time), or when it mixes unevaluatedProperties with patternProperties (see above).
    """
    meta = jsonschema.Draft202012Validator(
        jsonschema.Draft202012Validator.META_SCHEMA, format_checker=FORMAT_CHECKER
    )
    problems = []
    for error in meta.iter_errors(schema):
        path = error_path(error)
        if error.validator == "format" and isinstance(error.cause, PatternError):
            problems.append((path, str(error.cause)))
        else:
            problems.append((path, error.message))
    if problems:
        return problems
    todo: list[tuple[Any, str]] = [(schema, "")]
    while todo:
        item, path = todo.pop()
        if isinstance(item, Mapping):
            for keyword in ("$ref", "$dynamicRef"):
                ref = item.get(keyword)
                if isinstance(ref, str) and not ref.startswith("#"):
                    where = f"{path}.{keyword}" if path else keyword
                    problems.append((where, f"{ref!r} points outside the schema"))
            todo.extend((v, f"{path}.{k}" if path else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            todo.extend((v, f"{path}.{i}") for i, v in enumerate(item))
    if _mentions(schema, "unevaluatedProperties") and _mentions(schema, "patternProperties"):
        problems.append(("", "unevaluatedProperties cannot be used with patternProperties"))
    if not problems:
        # References are followed only when validating: try one document, so that a
        # reference to nowhere or a loop at the top is refused now rather than at run time.
        probes: tuple[Any, ...] = ({}, [], "")
        for probe in probes:
            for error in errors(schema, probe):
                if isinstance(error, BrokenSchema):
                    return [("", error.message)]
    return sorted(problems)
