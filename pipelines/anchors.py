"""The global audit sequence (every entry at a gap-free, HMAC-linked position), its signed
anchors in stores outside the database, and checking both (docs/audit.md)."""

from __future__ import annotations

import bisect
import hmac
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import environ
import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from pipelines import keys
from pipelines.audit import Break, purged_heads
from pipelines.models import AuditEntry, AuditLedger, LedgerState, Pipeline, Run

log = logging.getLogger(__name__)

# Entries given positions per transaction of the sequencer.
SEQUENCE_BATCH = 20_000
# Ledger rows read per query when verifying.
VERIFY_BATCH = 20_000
GLOBAL = "global sequence"


class AnchorStoreError(Exception):
    """An anchor could not be written to one of its stores (it is written again later)."""


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


# --- the stores -----------------------------------------------------------------------


class Store(Protocol):
    name: str

    def append(self, number: int, line: str) -> None: ...

    def last(self) -> str | None: ...

    def read(self) -> list[str] | None: ...


def _last_line(path: Path) -> str:
    with path.open("rb") as file:
        end = file.seek(0, os.SEEK_END)
        tail = b""
        start = end
        while start > 0:
            step = min(64 * 1024, start)
            start -= step
            file.seek(start)
            tail = file.read(step) + tail
            body = tail.rstrip(b"\n")
            if b"\n" in body:
                return body.rsplit(b"\n", 1)[1].decode()
        return tail.rstrip(b"\n").decode()


class FileStore:
    """An append-only JSONL file: opened with O_APPEND, each line fsynced, and the folder
    fsynced when the file is created, so a written anchor survives a crash."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"anchor file {self.path}"

    def append(self, number: int, line: str) -> None:
        try:
            created = not self.path.exists()
            prefix = b""
            if not created:
                last = _last_line(self.path)
                if last:
                    try:
                        held = json.loads(last).get("number")
                    except (ValueError, AttributeError):
                        held = None
                    if held == number:
                        if last != line:
                            raise AnchorStoreError(f"{self.name} holds another anchor {number}")
                        return
                    with self.path.open("rb") as file:
                        file.seek(-1, os.SEEK_END)
                        if file.read(1) != b"\n":  # a line cut short by a crash
                            prefix = b"\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                data = memoryview(prefix + line.encode() + b"\n")
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                folder = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except OSError as exc:
            raise AnchorStoreError(f"{self.name}: {exc.strerror or exc}") from exc

    def last(self) -> str | None:
        try:
            return _last_line(self.path) or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AnchorStoreError(f"{self.name}: {exc.strerror or exc}") from exc

    def read(self) -> list[str] | None:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AnchorStoreError(f"{self.name}: {exc.strerror or exc}") from exc


ANCHOR_TABLE = "firefly_audit_anchor"


class DatabaseStore:
    """A table in a database of its own (PostgreSQL or SQLite URL), created if missing;
    one row per anchor, keyed by its number."""

    def __init__(self, url: str) -> None:
        self.config = environ.Env.db_url_config(url)
        engine = self.config.get("ENGINE", "")
        if engine.endswith("sqlite3"):
            self.vendor = "sqlite"
        elif engine.endswith("postgresql"):
            self.vendor = "postgresql"
        else:
            raise ImproperlyConfigured(
                "FIREFLY_ANCHOR_DATABASE_URL must be a postgres:// or sqlite:// URL."
            )
        host = self.config.get("HOST") or ""
        self.name = f"anchor database {self.config.get('NAME')}" + (f" on {host}" if host else "")

    def _connect(self) -> Any:
        if self.vendor == "sqlite":
            return sqlite3.connect(self.config["NAME"], timeout=30, isolation_level=None)
        options = {
            "dbname": self.config.get("NAME"),
            "user": self.config.get("USER"),
            "password": self.config.get("PASSWORD"),
            "host": self.config.get("HOST"),
            "port": self.config.get("PORT"),
        }
        return psycopg.connect(autocommit=True, **{k: v for k, v in options.items() if v})

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.vendor == "sqlite" else sql

    def append(self, number: int, line: str) -> None:
        insert = (
            f"INSERT OR IGNORE INTO {ANCHOR_TABLE} (number, line) VALUES (?, ?)"
            if self.vendor == "sqlite"
            else f"INSERT INTO {ANCHOR_TABLE} (number, line) VALUES (%s, %s)"
            " ON CONFLICT (number) DO NOTHING"
        )
        try:
            db = self._connect()
            try:
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {ANCHOR_TABLE} "
                    "(number bigint PRIMARY KEY, line text NOT NULL)"
                )
                db.execute(insert, (number, line))
                (held,) = db.execute(
                    self._sql(f"SELECT line FROM {ANCHOR_TABLE} WHERE number = %s"),
                    (number,),
                ).fetchone()
            finally:
                db.close()
        except (psycopg.Error, sqlite3.Error) as exc:
            raise AnchorStoreError(f"{self.name}: {exc}") from exc
        if held != line:
            raise AnchorStoreError(f"{self.name} holds another anchor {number}")

    def last(self) -> str | None:
        lines = self._select(f"SELECT line FROM {ANCHOR_TABLE} ORDER BY number DESC LIMIT 1")
        return lines[0] if lines else None

    def read(self) -> list[str] | None:
        return self._select(f"SELECT line FROM {ANCHOR_TABLE} ORDER BY number")

    def _select(self, sql: str) -> list[str] | None:
        try:
            db = self._connect()
            try:
                rows = db.execute(sql).fetchall()
            finally:
                db.close()
        except (psycopg.errors.UndefinedTable, sqlite3.OperationalError) as exc:
            if "no such table" in str(exc) or isinstance(exc, psycopg.errors.UndefinedTable):
                return None
            raise AnchorStoreError(f"{self.name}: {exc}") from exc
        except psycopg.Error as exc:
            raise AnchorStoreError(f"{self.name}: {exc}") from exc
        return [line for (line,) in rows]


def stores() -> list[Store]:
    """The configured stores; the settings refuse a configuration with none."""
    found: list[Store] = []
    if settings.FIREFLY_ANCHOR_FILE:
        found.append(FileStore(settings.FIREFLY_ANCHOR_FILE))
    if settings.FIREFLY_ANCHOR_DATABASE_URL:
        found.append(DatabaseStore(settings.FIREFLY_ANCHOR_DATABASE_URL))
    if not found:
        raise ImproperlyConfigured("Set FIREFLY_ANCHOR_FILE or FIREFLY_ANCHOR_DATABASE_URL.")
    return found


# --- verification ---------------------------------------------------------------------


@dataclass
class AnchorCheck:
    """What verifying the anchors found: the anchors read, and the first problem."""

    anchors: list[dict[str, Any]] = field(default_factory=list)
    problem: Break | None = None
    checked: int = 0


def check_anchor(record: Any, where: str) -> Break | None:
    """An anchor's own problem: not an anchor, an unknown key id, a bad signature."""
    if not isinstance(record, dict) or record.get("type") != "anchor":
        return Break("edited", where, None, None, "not an anchor")
    number = record.get("number")
    key_id = str(record.get("key_id", ""))
    try:
        keys.get(key_id)
    except keys.UnknownKey:
        return Break(
            "forged", where, None, None, f"anchor {number} is signed with unknown key id {key_id!r}"
        )
    if not keys.verify(anchor_payload(record), key_id, str(record.get("signature", ""))):
        return Break(
            "edited",
            where,
            None,
            None,
            f"anchor {number}'s signature does not match its content (edited, or signed "
            f"with another key than {key_id!r})",
        )
    return None


def read_store(store: Store, written: int) -> tuple[list[dict[str, Any]], Break | None]:
    """A store's anchors, each checked and following the one before; `written` is how
    many the application database says were written."""
    try:
        lines = store.read()
    except AnchorStoreError as exc:
        return [], Break("unreadable", store.name, None, None, str(exc))
    if lines is None:
        if written:
            return [], Break(
                "deleted", store.name, None, None, f"it is missing; {written} anchors were written"
            )
        return [], None
    anchors: list[dict[str, Any]] = []
    previous = ""
    for number, line in enumerate(lines, 1):
        where = f"{store.name} line {number}"
        try:
            record = json.loads(line)
        except ValueError:
            return anchors, Break("edited", where, None, None, "not an anchor (not JSON)")
        problem = check_anchor(record, where)
        if problem:
            return anchors, problem
        if record["number"] != number:
            return anchors, Break(
                "deleted",
                where,
                None,
                None,
                f"anchor {number} is missing (this line is anchor {record['number']})",
            )
        if record.get("previous") != previous:
            return anchors, Break(
                "reordered",
                where,
                None,
                None,
                f"anchor {number} does not follow anchor {number - 1}",
            )
        previous = record["signature"]
        anchors.append(record)
    if len(anchors) < written:
        return anchors, Break(
            "deleted",
            store.name,
            None,
            None,
            f"it ends at anchor {len(anchors)}, but {written} were written (truncated)",
        )
    return anchors, None


def read_anchors() -> AnchorCheck:
    """The anchors of every configured store, checked against each other."""
    state = LedgerState.objects.filter(pk=1).first()
    written = state.anchor_number if state else 0
    result = AnchorCheck()
    readings = []
    for store in stores():
        anchors, problem = read_store(store, written)
        if problem and result.problem is None:
            result.problem = problem
        readings.append((store, anchors))
    longest = max(readings, key=lambda reading: len(reading[1]))
    for store, anchors in readings:
        if result.problem is None and len(anchors) < len(longest[1]):
            result.problem = Break(
                "deleted",
                store.name,
                None,
                None,
                f"it ends at anchor {len(anchors)}; {longest[0].name} holds "
                f"{len(longest[1])} (truncated)",
            )
    result.anchors = longest[1]
    return result


def _ledger_rows(after: int) -> list[tuple[Any, ...]]:
    """The next positions, each with its entry's hash and seq now (None: gone).

    The entries are read by their id range rather than joined row by row: positions
    follow ids closely, so one range scan finds them (a late commit's entry, far off,
    is read by id)."""
    ledger = AuditLedger._meta.db_table
    entries = AuditEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT position, entry_id, run_id, pipeline_id, seq, entry_hash, key_id, link"
            f" FROM {ledger} WHERE position > %s ORDER BY position LIMIT %s",
            [after, VERIFY_BATCH],
        )
        rows = cursor.fetchall()
        if not rows:
            return []
        ids = sorted(row[1] for row in rows)
        low = ids[0]
        # The range is at most a few times the batch: ids beyond it are read one by one.
        high = ids[bisect.bisect_right(ids, low + 4 * len(ids)) - 1]
        cursor.execute(
            f"SELECT id, hash, seq FROM {entries} WHERE id BETWEEN %s AND %s", [low, high]
        )
        found = {entry_id: (hash_, seq) for entry_id, hash_, seq in cursor.fetchall()}
        outside = [entry_id for entry_id in ids if entry_id > high]
        for start in range(0, len(outside), 1000):
            cursor.execute(
                f"SELECT id, hash, seq FROM {entries} WHERE id IN "
                f"({', '.join(['%s'] * len(outside[start : start + 1000]))})",
                outside[start : start + 1000],
            )
            found.update((entry_id, (hash_, seq)) for entry_id, hash_, seq in cursor.fetchall())
    gone = (None, None)
    return [(*row, *found.get(row[1], gone)) for row in rows]


def check_ledger(anchors: list[dict[str, Any]]) -> tuple[Break | None, int]:
    """The ledger against its links, its entries and the anchors; returns the first
    problem and how many positions were checked.

    The loop is the hot path of `verify_audit --anchors` (one pass per position): it
    only recomputes the link and compares; a position where anything differs, or that
    an anchor names, is looked at closely by `position_problem`.
    """
    heads = {anchor["position"]: anchor for anchor in anchors}
    chain_heads = {
        head["position"]: (anchor["number"], head)
        for anchor in anchors
        for head in anchor["chains"]
    }
    named = heads.keys() | chain_heads.keys()
    key_cache: dict[str, bytes] = {}
    digest = hmac.digest
    expected, previous = 1, ""
    while rows := _ledger_rows(expected - 1):
        for row in rows:
            position, entry_id, run_id, pipeline_id, seq, entry_hash, key_id, link = row[:8]
            key = key_cache.get(key_id)
            if key is None:
                try:
                    key = key_cache[key_id] = keys.get(key_id)
                except keys.UnknownKey:
                    return Break(
                        "forged",
                        GLOBAL,
                        None,
                        None,
                        f"position {position} is signed with unknown key id {key_id!r}",
                    ), position - 1
            # link_payload, written out: this line runs once per position.
            run = "" if run_id is None else run_id
            payload = (
                f"{position}|{entry_id}|{run}|{pipeline_id}|{seq}|{entry_hash}|{key_id}|{previous}"
            ).encode()
            if (
                position != expected
                or digest(key, payload, "sha256").hex() != link
                or row[8] != entry_hash
                or row[9] != seq
                or position in named
            ):
                problem = position_problem(row, expected, key, previous, heads, chain_heads)
                if problem:
                    return problem, expected - 1
            previous = link
            expected += 1
    if anchors and anchors[-1]["position"] > expected - 1:
        last = anchors[-1]
        return Break(
            "deleted",
            GLOBAL,
            None,
            None,
            f"the ledger ends at position {expected - 1}, anchor {last['number']} covers "
            f"{last['position']}: later positions were removed",
        ), expected - 1
    return check_owners(anchors), expected - 1


def position_problem(
    row: tuple[Any, ...],
    expected: int,
    key: bytes,
    previous: str,
    heads: dict[int, dict[str, Any]],
    chain_heads: dict[int, tuple[int, dict[str, Any]]],
) -> Break | None:
    """What is wrong at one position of the ledger, if anything."""
    position, entry_id, run_id, pipeline_id, seq, entry_hash, key_id, link, now_hash, now_seq = row
    chain = chain_name(run_id, pipeline_id)
    if position != expected:
        return Break(
            "deleted", GLOBAL, None, None, f"position {expected} is missing from the ledger"
        )
    payload = link_payload(
        position, entry_id, run_id, pipeline_id, seq, entry_hash, key_id, previous
    )
    if not hmac.compare_digest(hmac.digest(key, payload, "sha256").hex(), link):
        return Break(
            "edited",
            GLOBAL,
            None,
            None,
            f"position {position}'s link does not hold: the ledger was changed there",
        )
    if now_hash is None:
        return Break("deleted", chain, seq, entry_id, f"it holds position {position} but is gone")
    if now_hash != entry_hash:
        return Break(
            "edited", chain, seq, entry_id, f"its hash is not the one it had at position {position}"
        )
    if now_seq != seq:
        return Break(
            "reordered",
            chain,
            seq,
            entry_id,
            f"it was seq {seq} at position {position}, now seq {now_seq}",
        )
    anchor = heads.get(position)
    if anchor is not None and anchor["head"] != link:
        return Break(
            "edited",
            GLOBAL,
            None,
            None,
            f"position {position} is not the head anchor {anchor['number']} signed",
        )
    anchored = chain_heads.get(position)
    if anchored is not None:
        number, head = anchored
        if (head["run"], head["pipeline"], head["seq"], head["hash"]) != (
            run_id,
            pipeline_id,
            seq,
            entry_hash,
        ):
            return Break(
                "edited",
                head["chain"],
                head["seq"],
                None,
                f"anchor {number} has it at position {position}, the ledger has {chain} seq {seq}",
            )
    return None


def check_owners(anchors: Iterable[dict[str, Any]]) -> Break | None:
    """Each anchored chain's owner is still there, its head not rewound below what an
    anchor saw."""
    runs: dict[int, int] = {}
    pipelines: dict[int, int] = {}
    for anchor in anchors:
        for head in anchor["chains"]:
            owners = runs if head["run"] is not None else pipelines
            owner = head["run"] if head["run"] is not None else head["pipeline"]
            owners[owner] = max(owners.get(owner, 0), head["seq"])
    # A run purged by retention is gone on purpose: its purge record (in its pipeline's
    # chain) names the head it had, which must not be below what an anchor saw.
    purged = {pk: seq for pk, (seq, _) in purged_heads().items()} if runs else {}
    for model, owners, label in ((Run, runs, "run"), (Pipeline, pipelines, "pipeline")):
        ids = sorted(owners)
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            found = dict(model.objects.filter(pk__in=batch).values_list("pk", "audit_seq"))
            if model is Run:
                found.update({pk: purged[pk] for pk in batch if pk not in found and pk in purged})
            for owner in batch:
                if owner not in found:
                    return Break(
                        "deleted",
                        f"{label} {owner}",
                        None,
                        None,
                        f"it is gone; its chain was anchored up to seq {owners[owner]}",
                    )
                if found[owner] < owners[owner]:
                    return Break(
                        "deleted",
                        f"{label} {owner}",
                        None,
                        None,
                        f"its head was rewound to seq {found[owner]}; it was anchored at "
                        f"seq {owners[owner]}",
                    )
    return None


def verify() -> tuple[Break | None, int]:
    """Check the anchors and the ledger: the first problem, and positions checked."""
    anchors = read_anchors()
    if anchors.problem:
        return anchors.problem, 0
    return check_ledger(anchors.anchors)


def anchors_naming(chains: set[str]) -> Iterator[str]:
    """The lines of the anchors (first readable store) that name any of these chains."""
    for store in stores():
        try:
            lines = store.read()
        except AnchorStoreError:
            continue
        if lines is None:
            continue
        for line in lines:
            try:
                record = json.loads(line)
                named = {head["chain"] for head in record["chains"]}
            except (ValueError, KeyError, TypeError):
                continue
            if named & chains:
                yield line
        return


def anchored_hash(chain: dict[str, Any]) -> str | None:
    """The hash of the entry an anchor's chain head names, as the database holds it."""
    entries = AuditEntry.objects.filter(seq=chain["seq"])
    if chain["run"] is not None:
        entries = entries.filter(run_id=chain["run"])
    else:
        entries = entries.filter(run__isnull=True, pipeline_id=chain["pipeline"])
    return entries.values_list("hash", flat=True).first()


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
