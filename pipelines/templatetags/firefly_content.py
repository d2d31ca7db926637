"""`kv_rows`: a JSON value as key/value rows for the context and output tables."""

from __future__ import annotations

from typing import Any

from django import template

from pipelines import keyvalues

register = template.Library()


@register.filter
def kv_rows(value: Any) -> list[keyvalues.Row]:
    return keyvalues.rows(value)
