"""Checking the global audit sequence against its signed anchors: the stores' lines,
the ledger's links and gaps, and the chain heads the anchors saw
(`verify_audit --anchors`; pipelines/anchors.py writes them)."""

from __future__ import annotations

import bisect
import hmac
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from pipelines import keys
from pipelines.anchor_stores import AnchorStoreError, Store, stores
from pipelines.anchors import GLOBAL, anchor_payload, chain_name, link_payload
from pipelines.audit import Break, purged_heads
from pipelines.models import AuditEntry, AuditLedger, LedgerState, Pipeline, Run

log = logging.getLogger(__name__)

# Ledger rows read per query when verifying.
VERIFY_BATCH = 20_000


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
