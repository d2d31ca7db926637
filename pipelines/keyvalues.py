"""JSON values as key/value rows for a page: nested objects as dotted keys, lists compact."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A cell longer than this is cut; the whole value is one click away as JSON.
CELL_MAX = 120
# Past this depth an object is shown as JSON in its cell, not as more dotted keys.
DEPTH_MAX = 4
# A page shows at most this many rows of one value; the rest is in the full JSON.
ROWS_MAX = 200


@dataclass(frozen=True)
class Row:
    key: str
    text: str
    # The whole value as indented JSON when `text` is cut or compacted; else empty.
    full: str = ""
    kind: str = "str"  # str, number, bool, null, list, object: for the cell's style


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    return "object" if isinstance(value, dict) else "str"


def _cell(key: str, value: Any) -> Row:
    kind = _kind(value)
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        text = ", ".join(v if isinstance(v, str) else _compact(v) for v in value) or "[]"
        if any(isinstance(v, str) and "," in v for v in value):
            text = _compact(value)
    else:
        text = _compact(value)
    multiline = isinstance(value, str) and "\n" in value
    if len(text) > CELL_MAX or multiline:
        short = text.splitlines()[0] if multiline and text else text
        full = value if kind == "str" else pretty(value)
        return Row(key, short[: CELL_MAX - 1] + "…", full, kind)
    return Row(key, text, "", kind)


def rows(value: Any) -> list[Row]:
    """The rows of a value: one per leaf of its objects (`a.b.c`), lists in one cell each."""
    found: list[Row] = []

    def walk(prefix: str, item: Any, depth: int) -> None:
        if isinstance(item, dict) and item and depth < DEPTH_MAX:
            for key in sorted(item, key=str):
                walk(f"{prefix}.{key}" if prefix else str(key), item[key], depth + 1)
        else:
            found.append(_cell(prefix, item))

    walk("", value, 0)
    if len(found) > ROWS_MAX:
        rest = len(found) - ROWS_MAX
        return [*found[:ROWS_MAX], Row("…", f"{rest} more", pretty(value), "more")]
    return found
