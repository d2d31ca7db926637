"""The `schedules:` list of a pipeline spec: parsed and checked, no models, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from pipelines import schemas

OVERLAP = ("skip", "queue", "start_anyway")
MISSED = ("skip_missed", "catch_up_once")

# A year: a longer interval is a typo for a cron expression.
EVERY_MAX_S = 366 * 86400

SCHEDULE_NAME = r"^[a-z0-9][a-z0-9_-]{0,99}$"

SCHEDULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": SCHEDULE_NAME},
        "cron": {"type": "string", "minLength": 1, "maxLength": 200},
        "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
        "every_s": {"type": "integer", "minimum": 1, "maximum": EVERY_MAX_S},
        "inputs": {"type": "object"},
        "enabled": {"type": "boolean"},
        "overlap": {"enum": list(OVERLAP)},
        "missed": {"enum": list(MISSED)},
    },
}

SCHEDULES_SCHEMA: dict[str, Any] = {"type": "array", "maxItems": 50}


@dataclass(frozen=True)
class ScheduleSpec:
    """One schedule as a spec defines it: a cron expression in a time zone, or an interval."""

    name: str
    cron: str = ""
    timezone: str = "UTC"
    every_s: int | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True
    overlap: str = "skip"
    missed: str = "skip_missed"

    def definition(self) -> dict[str, Any]:
        """The fields as plain data: what the schedules app compares and stores."""
        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "every_s": self.every_s,
            "inputs": dict(self.inputs),
            "enabled": self.enabled,
            "overlap": self.overlap,
            "missed": self.missed,
        }


def timing_problems(cron: str, timezone: str, every_s: int | None) -> list[tuple[str, str]]:
    """(field, message) for each problem of a schedule's timing; [] when it is sound.

    Exactly one of `cron` and `every_s`; a cron expression of five fields (minute, hour,
    day of month, month, day of week) or a nickname such as `@daily`; an IANA time zone.
    """
    problems: list[tuple[str, str]] = []
    if bool(cron) == (every_s is not None):
        problems.append(("cron", "give either `cron` or `every_s`, not both and not neither"))
    if cron:
        fields = cron.split()
        if not cron.startswith("@") and len(fields) != 5:
            problems.append(
                (
                    "cron",
                    f"{cron!r} has {len(fields)} fields; a cron expression has five: "
                    "minute, hour, day of month, month, day of week",
                )
            )
        elif not croniter.is_valid(cron):
            problems.append(("cron", f"{cron!r} is not a valid cron expression"))
    if every_s is not None and not 1 <= every_s <= EVERY_MAX_S:
        problems.append(("every_s", f"must be between 1 and {EVERY_MAX_S} seconds"))
    if not timezone_known(timezone):
        problems.append(
            ("timezone", f"unknown time zone {timezone!r} (an IANA name: Europe/Paris)")
        )
    elif every_s is not None and timezone != "UTC":
        problems.append(("timezone", "an interval (`every_s`) has no time zone; leave it out"))
    return problems


def timezone_known(name: str) -> bool:
    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name the OS refuses
        return False
    return True


def input_problems(input_schema: Mapping[str, Any], inputs: Any) -> list[tuple[str, str]]:
    """(field, message) for each way the inputs break the pipeline's input schema."""
    if not isinstance(inputs, Mapping):
        return [("inputs", "must be a JSON object")]
    if not input_schema:
        return []
    return [
        (f"inputs.{p['field']}" if p["field"] else "inputs", p["message"])
        for p in schemas.field_problems(dict(input_schema), dict(inputs))
    ]


def parse_schedules(raw: Any, input_schema: Mapping[str, Any]) -> tuple[ScheduleSpec, ...]:
    """Build the spec's schedules, or raise ScheduleErrors listing every problem.

    Errors are `{step: None, field: "schedules[name].field", message}`, as the spec's own.
    """
    errors: list[dict[str, Any]] = []
    if raw is None:
        return ()
    for error in schemas.errors(SCHEDULES_SCHEMA, raw):
        errors.append({"step": None, "field": "schedules", "message": error.message})
    if errors:
        raise ScheduleErrors(errors)
    found: list[ScheduleSpec] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"schedules[{name if isinstance(name, str) else index + 1}]"
        shape = [(schemas.error_path(e), e.message) for e in schemas.errors(SCHEDULE_SCHEMA, item)]
        if shape:
            errors += [_error(where, path, message) for path, message in shape]
            continue
        assert isinstance(name, str)  # the schema required it
        if name in names:
            errors.append(_error(where, "name", f"duplicate schedule name {name!r}"))
        names.add(name)
        schedule = ScheduleSpec(
            name=name,
            cron=item.get("cron", ""),
            timezone=item.get("timezone", "UTC"),
            every_s=item.get("every_s"),
            inputs=item.get("inputs", {}),
            enabled=item.get("enabled", True),
            overlap=item.get("overlap", "skip"),
            missed=item.get("missed", "skip_missed"),
        )
        problems = timing_problems(schedule.cron, schedule.timezone, schedule.every_s)
        problems += input_problems(input_schema, schedule.inputs)
        errors += [_error(where, path, message) for path, message in problems]
        found.append(schedule)
    if errors:
        raise ScheduleErrors(errors)
    return tuple(found)


def _error(where: str, path: str, message: str) -> dict[str, Any]:
    return {"step": None, "field": f"{where}.{path}" if path else where, "message": message}


class ScheduleErrors(Exception):
    """The schedules' problems, as spec errors; parse_spec adds them to its own list."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} problems in schedules")
        self.errors = errors
