"""The insights page's query string read into a range, a pipeline and a format, or refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

DEFAULT_DAYS = 30
# A year of days keeps the per-day charts and tables readable and the queries bounded.
MAX_DAYS = 366
FORMATS = ("html", "csv")


class BadFilter(ValueError):
    """A filter the page cannot use; the message names the parameter and why."""


@dataclass(frozen=True)
class Filters:
    first: date
    last: date  # inclusive
    pipeline: str
    format: str
    section: str

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=UTC)

    def query(self, **changes: str) -> dict[str, str]:
        """The filters as query parameters (for links that keep them)."""
        values = {"from": self.first.isoformat(), "to": self.last.isoformat()}
        if self.pipeline:
            values["pipeline"] = self.pipeline
        values.update(changes)
        return values


def _day(name: str, text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"{name}: expected a date as YYYY-MM-DD, got {text[:40]!r}.") from None
    if len(text) != 10 or day.year < 2000 or day.year > 9000:
        raise BadFilter(f"{name}: expected a date as YYYY-MM-DD, got {text[:40]!r}.")
    return day


def parse(query: Any, pipelines: list[str], sections: list[str], today: date) -> Filters:
    """Read `from`, `to` (default: the last DEFAULT_DAYS days to today), `pipeline` (one
    the user operates, default all), `format` (html or csv) and, for a CSV, `section`."""
    last = _day("to", query["to"]) if query.get("to") else today
    first = (
        _day("from", query["from"])
        if query.get("from")
        else last - timedelta(days=DEFAULT_DAYS - 1)
    )
    if first > last:
        raise BadFilter(f"from: {first} is after to: {last}.")
    if (last - first).days + 1 > MAX_DAYS:
        raise BadFilter(f"from, to: at most {MAX_DAYS} days at a time.")
    pipeline = query.get("pipeline", "")
    if pipeline and pipeline not in pipelines:
        raise BadFilter(
            f"pipeline: you operate no pipeline named {pipeline[:100]!r} in this organization."
        )
    fmt = query.get("format", "") or "html"
    if fmt not in FORMATS:
        raise BadFilter(f"format: expected one of {', '.join(FORMATS)}, got {fmt[:40]!r}.")
    section = query.get("section", "")
    if fmt == "csv" and section not in sections:
        raise BadFilter(f"section: a CSV is of one section, one of {', '.join(sections)}.")
    return Filters(first, last, pipeline, fmt, section)
