"""The API's JSON parser: a request body too large or nested too deep is a 400, not a 500."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding

from pipelines.limits import measure


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class BoundedJSONParser(JSONParser):
    """Refuses bodies over FIREFLY_API_MAX_BODY_BYTES, and JSON deeper than
    FIREFLY_JSON_MAX_DEPTH, before any serializer or service walks them.

    json.loads recurses once per level: some 900 levels (fewer once DRF and Django are on
    the stack) raise RecursionError, which DRF's parser does not catch. Depth below that
    is measured after parsing, without recursion.
    """

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        limit = settings.FIREFLY_API_MAX_BODY_BYTES
        max_depth = settings.FIREFLY_JSON_MAX_DEPTH
        encoding = get_encoding(parser_context or {})
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise ParseError(f"The request body is larger than {limit:,} bytes.")
        try:
            data = json.loads(raw.decode(encoding), parse_constant=_no_constants)
        except RecursionError:
            raise ParseError(f"The JSON body is nested deeper than {max_depth} levels.") from None
        except (ValueError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        depth, _ = measure(data, max_depth)
        if depth > max_depth:
            raise ParseError(f"The JSON body is nested deeper than {max_depth} levels.")
        return data
