"""Bounds on JSON that comes from outside, and the check that a value is storable JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings


def measure(value: Any, max_depth: int) -> tuple[int, int]:
    """(depth, nodes: values and keys) of a JSON value, walked without recursion.

    The walk stops below `max_depth` (the depth then reads max_depth + 1): a value that
    contains itself, or one nested a million deep, costs no more than one at the limit.
    """
    depth = nodes = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, level = todo.pop()
        nodes += 1
        if isinstance(item, dict):
            nodes += len(item)  # its keys: YAML counts them as nodes too
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth = max(depth, level)
        if level > max_depth:
            return depth, nodes
        todo.extend((child, level + 1) for child in children)
    return depth, nodes


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (call it on values whose depth is bounded)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def bounds_problem(value: Any, *, what: str, max_bytes: int) -> str | None:
    """Why `value` is too deep or too large to accept, or None."""
    max_depth = settings.FIREFLY_JSON_MAX_DEPTH
    depth, _ = measure(value, max_depth)
    if depth > max_depth:
        return f"{what}: nested deeper than {max_depth} levels."
    size = json_size(value)
    if size > max_bytes:
        return f"{what}: {size:,} bytes of JSON, over the limit of {max_bytes:,}."
    return None


def _where(what: str, path: str) -> str:
    return f"{what} key {path!r}" if path else f"the {what}"


def json_problem(value: Any, what: str = "output") -> str | None:
    """Why `value` is not JSON PostgreSQL can store, naming the key that holds it; or None.

    JSON has no Decimal, set, bytes, date or NaN; json.dumps would refuse some and write
    others (NaN) that PostgreSQL then refuses, long after the handler returned.
    """
    max_depth = settings.FIREFLY_JSON_MAX_DEPTH
    todo: list[tuple[Any, str, int]] = [(value, "", 0)]
    while todo:
        item, path, level = todo.pop()
        if isinstance(item, dict):
            if level >= max_depth:
                return f"{_where(what, path)} is nested deeper than {max_depth} levels."
            children = []
            for key, child in item.items():
                if not isinstance(key, str):
                    return (
                        f"{_where(what, path)} has the key {key!r} ({type(key).__name__}); "
                        "JSON keys are strings."
                    )
                children.append((child, f"{path}.{key}" if path else key, level + 1))
            todo.extend(reversed(children))
        elif isinstance(item, list | tuple):
            if level >= max_depth:
                return f"{_where(what, path)} is nested deeper than {max_depth} levels."
            todo.extend(
                (child, f"{path}[{index}]", level + 1)
                for index, child in reversed(list(enumerate(item)))
            )
        elif isinstance(item, str):
            if "\x00" in item:
                return f"{_where(what, path)} holds a NUL character, which PostgreSQL cannot store."
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return f"{_where(what, path)} holds a lone surrogate, which is not valid Unicode."
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{_where(what, path)} holds {item!r}, which is not JSON."
        elif not (item is None or isinstance(item, bool | int)):
            return f"{_where(what, path)} holds a {type(item).__name__}, which is not JSON."
    return None
