"""Which line of a YAML or JSON spec text a spec error is about."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipelines.errors import SpecError
from pipelines.spec_text import SpecLoader

# PyYAML's messages end with the mark of the problem ("line 3, column 1"); the loader's own
# refusals start with "line N:".
_LINE = re.compile(r"\bline (\d+)")
_UNEXPECTED = re.compile(r"\('([^']+)'(?:, '[^']+')* (?:was|were) unexpected\)")


def compose(text: str) -> Node | None:
    """The text's YAML node tree with its marks, or None when it does not compose.

    Called only on text `spec.load_text` already read, so the loader's bounds have held.
    """
    try:
        loader = SpecLoader(text)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except (yaml.YAMLError, SpecError):
        return None


def _child(node: Node | None, key: str) -> tuple[Node, Node] | None:
    """(the node to point at, the node to descend into) for `key` below `node`."""
    if isinstance(node, MappingNode):
        for key_node, value in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return key_node, value
    if isinstance(node, SequenceNode) and key.isdigit() and int(key) < len(node.value):
        item = node.value[int(key)]
        return item, item
    return None


def _step_node(root: Node | None, step: str) -> Node | None:
    found = _child(root, "steps")
    steps = found[1] if found else None
    if not isinstance(steps, SequenceNode):
        return None
    if step.startswith("#") and step[1:].isdigit():
        index = int(step[1:]) - 1
        return steps.value[index] if 0 <= index < len(steps.value) else None
    for item in steps.value:
        named = _child(item, "name")
        if named and isinstance(named[1], ScalarNode) and named[1].value == step:
            return item
    return None


def line_of(root: Node | None, error: Mapping[str, Any]) -> int | None:
    """The 1-based line an error {step, field, message} is about, as near as the text says."""
    message = str(error.get("message", ""))
    if root is None:
        found = _LINE.findall(message)
        return int(found[-1]) if found else None
    node: Node | None = root
    if error.get("step"):
        node = _step_node(root, str(error["step"]))
        if node is None:
            return None
    mark: Node | None = node
    path = [p for p in str(error.get("field") or "").split(".") if p]
    # "Additional properties are not allowed ('x' was unexpected)": point at key x.
    unexpected = _UNEXPECTED.search(message)
    if unexpected:
        path.append(unexpected.group(1))
    for part in path:
        found_child = _child(node, part)
        if found_child is None:
            break
        mark, node = found_child
    if mark is None or mark.start_mark is None:
        return None
    return int(mark.start_mark.line) + 1


def with_lines(root: Node | None, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each error with `line` added: its line below `root` (None: as its message says)."""
    return [{**error, "line": line_of(root, error)} for error in errors]
