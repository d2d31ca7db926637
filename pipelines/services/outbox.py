"""The outbox: events for durable subscribers, written with the change that caused them.

A webhook delivery must not depend on the process that committed a run's change
living on: the event is a row of that same transaction, and the relay (a task sent on
commit, and a sweep on beat) hands each row to the durable hooks once, marking it
relayed in the transaction in which they write what they make of it.
Audit sinks are fed the same way: `audit.sink` rows name entries for one sink
(pipelines.sinks).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DurationField, ExpressionWrapper, F, Value
from django.db.models.functions import Least, Power
from django.utils import timezone

from orgs import selectors as orgs
from pipelines import dispatch, events, sinks
from pipelines.models import OutboxEvent

log = logging.getLogger(__name__)

# Rows locked and relayed per transaction.
BATCH = 100


def outbox_row(event: str, payload: dict[str, Any], organization_id: int) -> OutboxEvent | None:
    """The row to write for this event, or None when no durable hook wants it."""
    if not events.durable_wanted(event, payload):
        return None
    return OutboxEvent(organization_id=organization_id, event=event, payload=payload)


@dataclass
class GatedRow:
    """An outbox row to be written only where its condition holds (`events.register`'s
    `listens_where`), with the condition's parameters."""

    row: OutboxEvent
    condition: str
    params: list[Any]


def gated_row(
    event: str, payload: dict[str, Any], organization_id: int
) -> OutboxEvent | GatedRow | None:
    """The row to write for a run's event: unconditional, gated on PostgreSQL by its
    durable hooks' conditions, or None when no durable hook wants it."""
    row = outbox_row(event, payload, organization_id)
    if row is None or connection.vendor != "postgresql":
        return row
    conditions = events.durable_conditions(event, payload)
    if conditions is None:
        return row
    condition = " OR ".join(f"({c})" for c in conditions)
    return GatedRow(row, condition, [organization_id, event] * len(conditions))


def relay_on_commit() -> None:
    """Ask for a relay once this transaction commits (one message per transaction)."""
    dispatch.relay_outbox()


def outbox_write(
    event: str, payload: dict[str, Any], *, organization_id: int | None = None
) -> bool:
    """Write the event to the outbox in the current transaction, if a durable hook wants it.

    `organization_id` defaults to the one the payload's `organization` slug names.
    """
    org_id = (
        organization_id if organization_id is not None else orgs.pk_of(payload.get("organization"))
    )
    row = outbox_row(event, payload, org_id)
    if row is None:
        return False
    row.save()
    relay_on_commit()
    return True


def outbox_relay(
    *, older_than_s: float = 0.0, limit: int = 1000, ids: Collection[int] | None = None
) -> int:
    """Relay the events not relayed yet (those older than `older_than_s`; only those with
    the given `ids`, when given: an operator's "relay now"); returns how many.

    Each batch is one transaction: its rows are locked (SKIP LOCKED: concurrent relays
    take other rows), each is handed to the durable hooks in a savepoint and marked
    relayed, and the commit makes both durable together. A row whose hook raised is
    left for the sweep, with the error noted and its attempts counted (the sweep's wait
    for it doubles with each).
    """
    relayed = 0
    while relayed < limit:
        with transaction.atomic():
            pending = OutboxEvent.objects.filter(relayed_at__isnull=True)
            if ids is not None:
                pending = pending.filter(pk__in=list(ids))
            if older_than_s:
                # A row that failed waits twice as long after each attempt (up to 2**10).
                wait = ExpressionWrapper(
                    Value(timedelta(seconds=older_than_s)) * Power(2, Least(F("attempts"), 10)),
                    output_field=DurationField(),
                )
                pending = pending.alias(due=F("created_at") + wait).filter(due__lt=timezone.now())
            rows = list(pending.order_by("pk").select_for_update(skip_locked=True)[:BATCH])
            if not rows:
                break
            done = []
            for row in rows:
                try:
                    with transaction.atomic():
                        if row.event == sinks.SINK_EVENT:
                            sinks.deliver(row.payload)
                        else:
                            events.relay(row.event, row.payload)
                except Exception as exc:
                    log.exception("outbox: relaying %s %s failed", row.event, row.pk)
                    OutboxEvent.objects.filter(pk=row.pk).update(
                        attempts=row.attempts + 1, last_error=f"{type(exc).__name__}: {exc}"
                    )
                    continue
                done.append(row.pk)
            OutboxEvent.objects.filter(pk__in=done).update(relayed_at=timezone.now())
            relayed += len(done)
            if len(done) < len(rows):
                break  # the failed ones wait for the sweep
    return relayed


def outbox_sweep() -> int:
    """Relay what no on-commit relay took (its message or its process was lost), and
    forget events relayed more than FIREFLY_OUTBOX_KEEP_DAYS ago; returns how many relayed.
    """
    swept = outbox_relay(older_than_s=settings.FIREFLY_OUTBOX_RELAY_AFTER_S)
    if swept:
        log.warning("outbox: relayed %s events the on-commit relay missed", swept)
    outbox_prune()
    return swept


def outbox_prune(limit: int = 5000) -> int:
    """Delete up to `limit` events relayed before the keep period, oldest first."""
    cutoff = timezone.now() - timedelta(days=settings.FIREFLY_OUTBOX_KEEP_DAYS)
    # Ids grow with time: the oldest rows come first in the primary key's order.
    old = OutboxEvent.objects.filter(relayed_at__lt=cutoff).order_by("pk")[:limit]
    deleted, _ = OutboxEvent.objects.filter(pk__in=list(old.values_list("pk", flat=True))).delete()
    return deleted
