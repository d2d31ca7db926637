"""Appending to an audit chain: canonical JSON, HMAC links, one bulk insert per transaction."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from pipelines.models import AuditEntry, Pipeline, Run

# The fields a hash covers, in a fixed order; `hash` itself is left out.
HASHED_FIELDS = (
    "run_id",
    "pipeline_id",
    "seq",
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


def _json_default(value: Any) -> str:
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
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=_json_default).encode()


def entry_hash(entry: AuditEntry) -> str:
    key = settings.FIREFLY_AUDIT_KEY.encode()
    return hmac.new(key, canonical(entry), hashlib.sha256).hexdigest()


class AuditChain:
    """Appends entries to the chain of a run (or of a pipeline, for entries about no run).

    The caller holds the owner's row lock (or has just created it) for the whole
    transaction, then saves the owner's `audit_seq` and `audit_head` with its other
    changes; `flush` writes the entries in one INSERT.
    """

    def __init__(self, owner: Run | Pipeline, pipeline_id: int) -> None:
        self.owner = owner
        self.pipeline_id = pipeline_id
        self.entries: list[AuditEntry] = []

    def add(
        self,
        event: str,
        *,
        actor: Any = None,
        step_name: str = "",
        status: str = "",
        inputs: Any = None,
        outputs: Any = None,
        started_at: datetime | None = None,
        completed_at: datetime | None = None,
        error_message: str = "",
        pause_reason: str = "",
        data: Any = None,
        now: datetime | None = None,
    ) -> AuditEntry:
        owner = self.owner
        run = owner if isinstance(owner, Run) else None
        latency_ms = None
        if started_at and completed_at:
            latency_ms = max(0, int((completed_at - started_at).total_seconds() * 1000))
        entry = AuditEntry(
            run_id=run.pk if run else None,
            pipeline_id=self.pipeline_id,
            seq=owner.audit_seq + 1,
            step_name=step_name,
            event=event,
            actor_id=actor.pk if actor is not None else None,
            actor_name=actor.get_username() if actor is not None else "system",
            status=status,
            inputs=inputs,
            outputs=outputs,
            latency_ms=latency_ms,
            started_at=started_at,
            completed_at=completed_at,
            error_message=error_message,
            pause_reason=pause_reason,
            data=data,
            created_at=now or timezone.now(),
            prev_hash=owner.audit_head,
        )
        entry.hash = entry_hash(entry)
        owner.audit_seq = entry.seq
        owner.audit_head = entry.hash
        self.entries.append(entry)
        return entry

    def flush(self) -> None:
        if self.entries:
            AuditEntry.objects.bulk_create(self.entries)
            self.entries = []
