"""Reading a spec's text: JSON or YAML (without anchors or aliases), within the size,
depth and node bounds, before any of it is validated."""

from __future__ import annotations

import json
from typing import Any

import yaml
from django.conf import settings

from pipelines.errors import SpecError
from pipelines.limits import json_size, measure


def refused(message: str) -> SpecError:
    return SpecError([{"step": None, "field": None, "message": message}])


class SpecLoader(yaml.SafeLoader):
    """YAML without anchors or aliases, and with bounded nesting and node count.

    An alias makes a node stand for another, so ten lines of aliases to aliases expand to
    billions of values ("billion laughs"): refused while composing, before anything is
    expanded. A spec never needs one; write the value out.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "an alias (*)" if isinstance(event, yaml.AliasEvent) else "an anchor (&)"
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise refused(
                f"line {line}: {kind}; YAML anchors and aliases are not allowed in a spec"
            )
        self.nodes += 1
        if self.nodes > settings.FIREFLY_SPEC_MAX_NODES:
            raise refused(f"the spec has more than {settings.FIREFLY_SPEC_MAX_NODES:,} nodes")
        self.depth += 1
        if self.depth > settings.FIREFLY_JSON_MAX_DEPTH:
            raise refused(
                f"the spec is nested deeper than {settings.FIREFLY_JSON_MAX_DEPTH} levels"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_text(text: str) -> Any:
    """Read a spec from JSON or YAML text, within the size, depth and node bounds."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > settings.FIREFLY_SPEC_MAX_BYTES:
        raise refused(
            f"the spec is {size:,} bytes; the limit is {settings.FIREFLY_SPEC_MAX_BYTES:,}"
        )
    # PyYAML reads YAML 1.1, where JSON is not quite a subset (exponent floats, escaped
    # surrogate pairs, tabs), so JSON-looking text goes to the JSON parser first.
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except RecursionError:
            raise refused(
                f"the spec is nested deeper than {settings.FIREFLY_JSON_MAX_DEPTH} levels"
            ) from None
        except json.JSONDecodeError:
            pass  # flow-style YAML such as {name: x} also starts with a brace
        else:
            check_bounds(data)
            return data
    try:
        loader = SpecLoader(text)  # the reader refuses control characters here
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise refused(f"not valid YAML/JSON: {exc}") from exc


def check_bounds(data: Any) -> None:
    """Refuse a spec nested too deep, with too many nodes, or too large as JSON."""
    max_depth = settings.FIREFLY_JSON_MAX_DEPTH
    depth, nodes = measure(data, max_depth)
    if depth > max_depth:
        raise refused(f"the spec is nested deeper than {max_depth} levels")
    if nodes > settings.FIREFLY_SPEC_MAX_NODES:
        raise refused(f"the spec has more than {settings.FIREFLY_SPEC_MAX_NODES:,} nodes")
    size = json_size(data)
    if size > settings.FIREFLY_SPEC_MAX_BYTES:
        raise refused(
            f"the spec is {size:,} bytes as JSON; the limit is {settings.FIREFLY_SPEC_MAX_BYTES:,}"
        )
