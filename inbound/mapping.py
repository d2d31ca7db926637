"""A hook's input mapping: each run input is a JMESPath expression over the JSON body."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

MAX_EXPRESSION = 500
MAX_INPUTS = 100


class MappingError(Exception):
    """An expression that failed on a body: names the input and the expression."""

    def __init__(self, name: str, expression: str, problem: str) -> None:
        super().__init__(f"input {name!r} ({expression}): {problem}")
        self.name = name
        self.expression = expression
        self.problem = problem


@lru_cache(maxsize=1024)
def compiled(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def expression_problem(expression: Any) -> str:
    """What is wrong with one expression, or ''."""
    if not isinstance(expression, str) or not expression.strip():
        return "an expression must be a non-empty string"
    if len(expression) > MAX_EXPRESSION:
        return f"an expression has at most {MAX_EXPRESSION} characters"
    try:
        compiled(expression)
    except JMESPathError as exc:
        return f"{expression!r} is not a JMESPath expression: {exc}"
    return ""


def mapping_problems(value: Any) -> list[str]:
    """Each problem of a mapping {input name: expression}, naming the input."""
    if not isinstance(value, dict):
        return ["the input mapping must be an object of input name -> JMESPath expression"]
    if len(value) > MAX_INPUTS:
        return [f"the input mapping has at most {MAX_INPUTS} inputs"]
    problems = []
    for name, expression in value.items():
        if not name:
            problems.append("an input name may not be empty")
            continue
        problem = expression_problem(expression)
        if problem:
            problems.append(f"input {name!r}: {problem}")
    return problems


def search(expression: str, body: Any) -> Any:
    return compiled(expression).search(body)


def map_inputs(input_mapping: dict[str, str], body: Any) -> dict[str, Any]:
    """The run's inputs from the body. An empty mapping takes the body itself (an object).

    An expression that matches nothing (null) leaves its input out, so the pipeline's
    input_schema says whether it was required; one that cannot be evaluated on this body
    raises MappingError.
    """
    if not input_mapping:
        if not isinstance(body, dict):
            raise MappingError("", "@", "the body must be a JSON object when there is no mapping")
        return body
    inputs = {}
    for name, expression in input_mapping.items():
        try:
            value = search(expression, body)
        except JMESPathError as exc:
            raise MappingError(name, expression, str(exc)) from exc
        if value is not None:
            inputs[name] = value
    return inputs
