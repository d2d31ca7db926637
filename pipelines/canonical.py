"""The canonical JSON of an audit entry: what its HMAC covers and what sinks publish."""

from __future__ import annotations

import json
from datetime import UTC, datetime
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


def json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def canonical(entry: AuditEntry) -> bytes:
    """The entry as compact JSON with sorted keys, timestamps in UTC ISO 8601."""
    values = {}
    for name in HASHED_FIELDS:
        value = getattr(entry, name)
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        values[name] = value
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=json_default).encode()
