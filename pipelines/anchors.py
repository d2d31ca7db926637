"""The global audit sequence (every entry at a gap-free, HMAC-linked position), its signed
anchors in stores outside the database, and checking both (docs/audit.md)."""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from pipelines import keys
from pipelines.anchor_stores import AnchorStoreError as AnchorStoreError
from pipelines.anchor_stores import stores
from pipelines.models import AuditEntry, AuditLedger, LedgerState

log = logging.getLogger(__name__)

# Entries given positions per transaction of the sequencer.
SEQUENCE_BATCH = 20_000
GLOBAL = "global sequence"


# --- the ledger -----------------------------------------------------------------------


def chain_name(run_id: int | None, pipeline_id: int) -> str:
    return f"run {run_id}" if run_id is not None else f"pipeline {pipeline_id}"


def link_payload(
    position: int,
    entry_id: int,
    run_id: int | None,
    pipeline_id: int,
    seq: int,
    entry_hash: str,
    key_id: str,
    previous: str,
) -> bytes:
    """What a position's link is the HMAC of: the position, the entry it names (id, chain,
    seq and hash), the key's id and the previous position's link."""
    run = "" if run_id is None else run_id
    return (
        f"{position}|{entry_id}|{run}|{pipeline_id}|{seq}|{entry_hash}|{key_id}|{previous}"
    ).encode()


def _locked_state() -> LedgerState:
    LedgerState.objects.get_or_create(pk=1)
    return LedgerState.objects.select_for_update().get(pk=1)


# The transactions in progress in this database (their own transaction id lock),
# but this one. A session whose database cannot be read (another role's, without
# pg_read_all_stats) counts as this database's: the floor waits for it too.
IN_PROGRESS = """
SELECT coalesce(json_agg(json_build_array(l.pid, l.transactionid::text)), '[]')
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
  AND l.pid <> pg_backend_pid()
  AND (a.datname IS NULL OR a.datname = current_database())
"""


def _horizon() -> tuple[int, list[list[Any]] | None]:
    """The highest entry id visible now and, on PostgreSQL, the transactions of this
    database in progress (read by the same statement)."""
    table = AuditEntry._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT (SELECT coalesce(max(id), 0) FROM {table}), ({IN_PROGRESS})::text"
            )
            highest, running = cursor.fetchone()
            return highest, json.loads(running)
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
        return cursor.fetchone()[0], None


def sequence(*, limit: int = SEQUENCE_BATCH, after: int | None = None) -> tuple[int, int]:
    """Give the committed entries that have no position the next ones, in id order;
    returns how many (at most `limit`) and the last id given one (0: none).

    An entry can commit after one with a higher id (its transaction took its id first
    and finished later), so the sequencer never moves past an id for good: it looks for
    every entry above `floor` that has no position, and raises `floor` only to an id
    no transaction still running can be below. On PostgreSQL that is the highest id
    seen by the previous run once every transaction of this database then in progress
    has ended (an audit writer holds its transaction id before it takes an entry id:
    it locks or creates the chain's owner first); on SQLite this transaction holds the
    write lock, so nothing is in flight.

    With `after`, only entries above that id are looked for, and the floor stays where
    it is: `sequence_all` goes through a backlog so, batch after batch.
    """
    with transaction.atomic():
        state = _locked_state()
        highest, running = _horizon()
        settled: int | None
        if running is None:
            settled = highest
        elif state.pending_transactions is not None and not (
            {tuple(t) for t in state.pending_transactions} & {tuple(t) for t in running}
        ):
            settled = state.pending_horizon
        else:
            settled = None
        ledgered = AuditLedger.objects.filter(entry_id=OuterRef("pk"))
        rows = list(
            AuditEntry.objects.filter(pk__gt=max(state.floor, after or 0))
            .exclude(Exists(ledgered))
            .order_by("pk")
            .values_list("pk", "run_id", "pipeline_id", "seq", "hash")[:limit]
        )
        key_id, key = keys.current()
        position, head = state.position, state.head
        ledger = []
        for entry_id, run_id, pipeline_id, seq, entry_hash in rows:
            position += 1
            payload = link_payload(
                position, entry_id, run_id, pipeline_id, seq, entry_hash, key_id, head
            )
            head = hmac.digest(key, payload, "sha256").hex()
            ledger.append((position, entry_id, run_id, pipeline_id, seq, entry_hash, key_id, head))
        _insert_positions(ledger)
        state.position, state.head = position, head
        if after is not None:
            settled = None
        elif settled is not None:
            # A full batch covers the entries without a position only up to its last id.
            covered = settled if len(rows) < limit else min(settled, rows[-1][0])
            state.floor = max(state.floor, covered)
        if running is not None and (state.pending_transactions is None or settled is not None):
            state.pending_horizon, state.pending_transactions = highest, running
        state.save()
        return len(rows), rows[-1][0] if rows else 0


LEDGER_COLUMNS = "position, entry_id, run_id, pipeline_id, seq, entry_hash, key_id, link"


def _insert_positions(ledger: list[tuple[Any, ...]]) -> None:
    """Write the new positions: on PostgreSQL one INSERT of arrays (the ORM's bulk_create
    costs more than the rest of sequencing), elsewhere one statement run per row."""
    if not ledger:
        return
    table = AuditLedger._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({LEDGER_COLUMNS}) SELECT * FROM unnest("
                "%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::integer[],"
                " %s::text[], %s::text[], %s::text[])",
                [list(column) for column in zip(*ledger, strict=True)],
            )
        else:
            cursor.executemany(
                f"INSERT INTO {table} ({LEDGER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                ledger,
            )


def sequence_all() -> int:
    """Sequence every committed entry without a position; returns how many.

    Through a backlog, each batch starts where the last ended (rather than rescanning
    from the floor); a last pass from the floor then takes the entries that committed
    late below those batches.
    """
    total, after = 0, None
    while True:
        count, last = sequence(after=after)
        total += count
        if count < SEQUENCE_BATCH:
            break
        after = last
    if after is not None:
        total += sequence()[0]
    return total


# --- anchors --------------------------------------------------------------------------


def anchor_payload(record: dict[str, Any]) -> bytes:
    """The canonical JSON an anchor's signature covers: every field but the signature."""
    signed = {name: value for name, value in record.items() if name != "signature"}
    return json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()


def anchor_line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def sign_anchor(record: dict[str, Any], key_id: str | None = None) -> dict[str, Any]:
    """The record with `key_id` and `signature` set (the current key unless named)."""
    key_id = key_id or keys.current()[0]
    signed = {**record, "key_id": key_id}
    signed["signature"] = keys.sign(anchor_payload(signed), key_id)[1]
    return signed


def changed_chains(after: int, upto: int) -> list[dict[str, Any]]:
    """The head of each chain among ledger positions after..upto: its highest seq."""
    heads: dict[tuple[int | None, int | None], tuple[Any, ...]] = {}
    rows = (
        AuditLedger.objects.filter(position__gt=after, position__lte=upto)
        .order_by("position")
        .values_list("run_id", "pipeline_id", "seq", "entry_hash", "position")
    )
    for run_id, pipeline_id, seq, entry_hash, position in rows.iterator(chunk_size=5000):
        owner = (run_id, None if run_id is not None else pipeline_id)
        known = heads.get(owner)
        if known is None or seq > known[2]:
            heads[owner] = (run_id, pipeline_id, seq, entry_hash, position)
    return [
        {
            "chain": chain_name(run_id, pipeline_id),
            "run": run_id,
            "pipeline": pipeline_id,
            "seq": seq,
            "hash": entry_hash,
            "position": position,
        }
        for run_id, pipeline_id, seq, entry_hash, position in sorted(
            heads.values(), key=lambda head: head[4]
        )
    ]


def anchor_audit(*, now: datetime | None = None) -> dict[str, Any] | None:
    """Sequence the new entries, then write an anchor to every store if the ledger moved
    since the last one; returns the anchor written (None: nothing new).

    The anchor is signed and kept in the database before any store sees it; a store that
    fails raises `AnchorStoreError`, and the next run writes that same anchor again (each
    store skips one it already holds) before making a new one.
    """
    sequence_all()
    with transaction.atomic():
        state = _locked_state()
        if not state.pending_anchor and state.position > state.anchor_position:
            record = {
                "type": "anchor",
                "number": state.anchor_number + 1,
                "previous": state.anchor_signature,
                "position": state.position,
                "head": state.head,
                "chains": changed_chains(state.anchor_position, state.position),
                "at": (now or timezone.now()).astimezone(UTC).isoformat(),
            }
            state.pending_anchor = anchor_line(sign_anchor(record))
            state.save(update_fields=["pending_anchor"])
    with transaction.atomic():
        state = _locked_state()
        if not state.pending_anchor:
            return None
        line = state.pending_anchor
        anchor = json.loads(line)
        for store in stores():
            store.append(anchor["number"], line)
        state.anchor_number = anchor["number"]
        state.anchor_position = anchor["position"]
        state.anchor_signature = anchor["signature"]
        state.pending_anchor = ""
        state.save()
        return dict(anchor)


def newest_anchor() -> str | None:
    """The newest anchor line of the first store that answers (None: no anchor yet).

    Retention puts it at the end of an archive segment: it signs the ledger's position
    and head, which link every entry sequenced before it, the segment's among them.
    """
    for store in stores():
        try:
            return store.last()
        except AnchorStoreError as exc:
            log.warning("%s", exc)
    return None
