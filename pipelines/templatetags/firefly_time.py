"""`duration`: a length of time in milliseconds as people read it ("17 min", "1 h 12 min")."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

MINUTE_S = 60
HOUR_S = 60 * MINUTE_S
DAY_S = 24 * HOUR_S


@register.filter
def duration(milliseconds: Any) -> str:
    """Two units at most, the larger first: a wait of hours needs no seconds.

    Under a second stays in ms (machine time), under a minute in seconds, under ten minutes
    in minutes and seconds; then minutes, hours and minutes, days and hours. Empty for no value.
    """
    if milliseconds is None or milliseconds == "":
        return ""
    try:
        ms = int(milliseconds)
    except (TypeError, ValueError):
        return ""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms // 1000
    if seconds < 10:
        return f"{ms // 100 / 10:g} s"
    if seconds < MINUTE_S:
        return f"{seconds} s"
    if seconds < 10 * MINUTE_S:
        minutes, rest = divmod(seconds, MINUTE_S)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if seconds < HOUR_S:
        return f"{seconds // MINUTE_S} min"
    if seconds < DAY_S:
        hours, minutes = divmod(seconds // MINUTE_S, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(seconds // HOUR_S, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
