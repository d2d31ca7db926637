"""The canonical JSON of an audit entry: what its HMAC covers and what sinks publish."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.models import AuditEntry

# The fields a hash covers; `hash` itself is left out, and so is `seq`: an entry's
# place in its chain is fixed by `prev_hash`, so a swap or a renumbering shows up as a
# broken link (reordered, inserted, deleted) rather than as an edit.
HASHED_FIELDS = (
    "run_id",
    "pipeline_id",
    "step_name",
    "event",
    "actor_id",
    "actor_name",
    "status",
    "inputs",
    "outputs",
    "latency_ms",
    "started_at",
    "completed_at",
    "error_message",
    "pause_reason",
    "data",
    "created_at",
    "prev_hash",
)

# What an entry says, as opposed to where it stands and who wrote it: the part a
# redaction empties. Scheme 3 hashes it apart (`content_digest`) and the HMAC covers that
# digest, so the chain still verifies after the content is gone.
CONTENT_FIELDS = ("inputs", "outputs", "error_message", "pause_reason", "data")
HEADER_FIELDS = tuple(name for name in HASHED_FIELDS if name not in CONTENT_FIELDS)

# How an entry is put into canonical form before hashing (AuditEntry.hash_scheme; entries
# keep the scheme they were written with):
# 1: values as they were (entries written before scheme 2; a number jsonb rewrites
#    breaks them);
# 2: numbers by their exact decimal value, in the form PostgreSQL and SQLite give back
#    unchanged (see `numbers`); the scheme itself is hashed too, as `hash_scheme`;
# 3: as 2, but the content fields are hashed by their SHA-256 (`content_sha256`, stored
#    as `content_hash`) and the signing key's id is hashed as `key_id`.
VALUES_AS_GIVEN = 1
NUMBERS_BY_VALUE = 2
CONTENT_BY_DIGEST = 3
CURRENT_SCHEME = CONTENT_BY_DIGEST
SCHEMES = (VALUES_AS_GIVEN, NUMBERS_BY_VALUE, CONTENT_BY_DIGEST)


def json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def number(value: float) -> int | float:
    """A float as an int when its shortest decimal form is a whole number, else itself.

    PostgreSQL's jsonb keeps a number as the exact decimal that Python wrote (`repr`) and
    gives it back without exponent or sign of zero: 1e16 comes back as the integer
    10000000000000000, 1.5e300 as a 301-digit integer, -0.0 as 0.0, 5.0 as 5.0 and 1e-7
    as 0.0000001, which reads back as the same float. Whole numbers therefore become exact
    ints (5.0 and 5 hash alike, as jsonb compares them) and every other float stays as
    it is, so a value and what the database returns for it have the same form.
    """
    if not math.isfinite(value):
        return value  # not JSON: json_problem keeps it out of the trail
    exact = Decimal(repr(value))
    if exact == exact.to_integral_value():
        return int(exact)
    return value


def _floats_in(value: Any) -> bool:
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def numbers(value: Any) -> Any:
    """`value` with every float replaced by `number(float)`; walked without recursion.

    Most entries hold no float: they are returned as they are, without a copy.
    """
    if isinstance(value, float):
        return number(value)
    if not isinstance(value, dict | list) or not _floats_in(value):
        return value
    root: list[Any] = [value]
    todo: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while todo:
        parent, key, item = todo.pop()
        if isinstance(item, dict):
            copy: Any = dict(item)
            todo.extend((copy, k, v) for k, v in item.items())
        elif isinstance(item, list):
            copy = list(item)
            todo.extend((copy, i, v) for i, v in enumerate(item))
        elif isinstance(item, float):
            copy = number(item)
        else:
            continue
        parent[key] = copy
    return root[0]


# One encoder for every entry: json.dumps with these options would build a new one per
# call, a measurable share of verifying a million entries.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=json_default)
_SCALARS = (str, int, type(None))


def _dumps(values: dict[str, Any]) -> bytes:
    return _ENCODER.encode(values).encode()


def _timestamp(value: datetime) -> str:
    return (value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat()


def content(entry: AuditEntry) -> dict[str, Any]:
    """The entry's content fields, numbers by their value."""
    values = {}
    for name in CONTENT_FIELDS:
        value = getattr(entry, name)
        values[name] = value if type(value) in _SCALARS else numbers(value)
    return values


def content_digest(entry: AuditEntry) -> str:
    """SHA-256 (hex) of the canonical JSON of the entry's content fields."""
    return hashlib.sha256(_dumps(content(entry))).hexdigest()


def canonical(entry: AuditEntry) -> bytes:
    """The JSON the entry's HMAC covers: compact, sorted keys, timestamps in UTC ISO 8601,
    values in the form of the entry's hash scheme (schemes 2 and 3 name the scheme).

    Scheme 3 holds the header fields, `content_sha256` (the stored `content_hash`) and
    `key_id`; schemes 1 and 2 hold the content fields themselves. The result reads back
    with `json.loads` and writes again with `json.dumps(..., sort_keys=True,
    separators=(",", ":"))` to the same bytes, so a consumer of a sink or export line can
    check its HMAC without the database.
    """
    # An object without the field (the benchmarks build namespaces) is scheme 1, as is a
    # row inserted without the column (its database default).
    scheme = getattr(entry, "hash_scheme", VALUES_AS_GIVEN)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown audit hash scheme {scheme!r}")
    if scheme == CONTENT_BY_DIGEST:
        return _dumps(_header(entry))
    fields = HASHED_FIELDS
    values = {}
    for name in fields:
        value = getattr(entry, name)
        if type(value) in _SCALARS:
            pass
        elif isinstance(value, datetime):
            value = _timestamp(value)
        elif scheme != VALUES_AS_GIVEN:
            value = numbers(value)
        values[name] = value
    if scheme != VALUES_AS_GIVEN:
        values["hash_scheme"] = scheme
    return _dumps(values)


_HEADER_VALUES = attrgetter(*HEADER_FIELDS, "content_hash", "key_id")
_HEADER_KEYS = (*HEADER_FIELDS, "content_sha256", "key_id")
_TIMESTAMPS = tuple(name for name in HEADER_FIELDS if name.endswith("_at"))


def _header(entry: AuditEntry) -> dict[str, Any]:
    """Scheme 3's hashed values: its columns are numbers, strings and timestamps, so only
    the timestamps need a canonical form (read in one call: a million entries are
    verified in one go)."""
    values = dict(zip(_HEADER_KEYS, _HEADER_VALUES(entry), strict=True))
    for name in _TIMESTAMPS:
        value = values[name]
        if isinstance(value, datetime):
            values[name] = _timestamp(value)
    values["hash_scheme"] = CONTENT_BY_DIGEST
    return values


def published(entry: AuditEntry) -> dict[str, Any]:
    """What sinks and exports carry: the hashed JSON, plus the content for scheme 3.

    To check a scheme 3 line: the SHA-256 of its content fields' canonical JSON is its
    `content_sha256` (unless it was redacted: `redacted` is set and they are null or
    empty), and the HMAC of the line without the content fields, `seq`, `hash`, `id` and
    `redacted` is its `hash`.
    """
    values: dict[str, Any] = json.loads(canonical(entry))
    if getattr(entry, "hash_scheme", VALUES_AS_GIVEN) == CONTENT_BY_DIGEST:
        values.update(content(entry))
        redacted_at = getattr(entry, "redacted_at", None)
        if redacted_at is not None:
            values["redacted"] = redacted_at.astimezone(UTC).isoformat()
    return values
