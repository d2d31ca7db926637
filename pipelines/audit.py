"""Appending to an audit chain: HMAC links, one bulk insert per transaction; verifying it."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections import namedtuple
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Max, Min, QuerySet
from django.utils import timezone

from firefly_site import metrics
from pipelines import keys, sinks
from pipelines.canonical import (
    CONTENT_BY_DIGEST,
    CURRENT_SCHEME,
    content_digest,
    json_default,
    published,
)
from pipelines.canonical import HASHED_FIELDS as HASHED_FIELDS
from pipelines.canonical import canonical as canonical
from pipelines.models import AuditEntry, OutboxEvent, Pipeline, Run

# The entry a redaction appends to its chain; it names who, why and up to which seq.
REDACTED = "audit.redacted"


def snapshot(value: Any) -> Any:
    """A JSON value for an entry, replaced by a marker when larger than the limit.

    The marker keeps the original's size and SHA-256, so a copy kept elsewhere can
    still be matched against the trail.
    """
    if value is None:
        return None
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), default=json_default)
    limit = settings.FIREFLY_AUDIT_SNAPSHOT_LIMIT
    if len(encoded) <= limit:
        return value
    return {
        "truncated": True,
        "size": len(encoded),
        "sha256": hashlib.sha256(encoded.encode()).hexdigest(),
        "preview": encoded[: min(limit, 512)],
    }


def entry_hash(entry: AuditEntry) -> str:
    """The HMAC of the entry's canonical JSON, in the entry's own hash scheme, with the
    key it names (raises keys.UnknownKey for a key id that is not configured)."""
    key = keys.get(getattr(entry, "key_id", ""))
    return hmac.new(key, canonical(entry), hashlib.sha256).hexdigest()


def content_matches(entry: AuditEntry) -> bool:
    """Whether a scheme 3 entry's content still has the digest its hash covers (a
    redacted entry's content is gone: its stored digest stands for it)."""
    if entry.hash_scheme != CONTENT_BY_DIGEST or entry.redacted_at is not None:
        return True
    return content_digest(entry) == entry.content_hash


def intact(entry: AuditEntry) -> bool:
    """Whether the entry's stored fields still match its HMAC (no query). A redacted
    entry of a scheme before 3 cannot be checked: its hash covered the content."""
    if entry.redacted_at is not None and entry.hash_scheme != CONTENT_BY_DIGEST:
        return True
    try:
        return content_matches(entry) and hmac.compare_digest(entry_hash(entry), entry.hash)
    except ValueError:  # an unknown scheme or key
        return False


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
        self.key_id = keys.current_id()

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
            organization_id=owner.organization_id,
            run_id=run.pk if run else None,
            pipeline_id=self.pipeline_id,
            seq=owner.audit_seq + 1,
            step_name=step_name,
            event=event,
            actor_id=actor.pk if actor is not None else None,
            actor_name=actor.get_username() if actor is not None else "system",
            status=status,
            inputs=snapshot(inputs),
            outputs=snapshot(outputs),
            latency_ms=latency_ms,
            started_at=started_at,
            completed_at=completed_at,
            error_message=error_message,
            pause_reason=pause_reason,
            data=snapshot(data),
            created_at=now or timezone.now(),
            prev_hash=owner.audit_head,
            # Explicit: the column's database default marks rows from before schemes.
            hash_scheme=CURRENT_SCHEME,
            key_id=self.key_id,
        )
        entry.content_hash = content_digest(entry)
        entry.hash = entry_hash(entry)
        owner.audit_seq = entry.seq
        owner.audit_head = entry.hash
        self.entries.append(entry)
        return entry

    def flush(self) -> None:
        if self.entries:
            rows = sinks.outbox_rows(self.entries)
            AuditEntry.objects.bulk_create(self.entries)
            OutboxEvent.objects.bulk_create(rows)
            # Counted as written: no after-commit hook on this path for a counter.
            metrics.AUDIT_ENTRIES.inc(len(self.entries))
            self.entries = []


def redact(
    chain: AuditChain, *, actor: Any, reason: str, now: datetime | None = None
) -> AuditEntry:
    """Empty the content of every entry of the chain's run so far, and record it.

    The caller holds the run's row lock, as for every append; it saves the run's head
    and flushes the chain afterwards, as usual. Hashes, links and headers stay, so the
    chain still proves order and completeness; the appended `audit.redacted` entry names
    who, why and the last seq it covers, and verification reports any redacted entry no
    such entry covers.
    """
    run = chain.owner
    if not isinstance(run, Run):
        raise TypeError("only a run's entries are redacted")
    reason = reason.strip()
    if not reason:
        raise ValueError("a redaction needs a reason")
    now = now or timezone.now()
    chain.flush()
    through = run.audit_seq
    count = AuditEntry.objects.filter(run_id=run.pk, seq__lte=through).redact(now)
    data = {"reason": reason, "through_seq": through, "count": count}
    return chain.add(REDACTED, actor=actor, data=data, now=now)


# --- verification ---------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """The first broken link of a chain, and what kind of tampering it shows."""

    kind: str  # edited | deleted | inserted | reordered | unknown key | redacted
    chain: str
    seq: int | None
    entry_id: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.chain} seq {self.seq} (entry {self.entry_id})" if self.seq else self.chain
        return f"{where}: {self.kind}: {self.message}"


# The head `chains` gives the chain of a run whose row is gone without a purge that
# recorded it: the run was deleted behind retention's back.
UNRECORDED = (-1, "")


def verify_chain(
    chain: str, entries: Sequence[AuditEntry], head: tuple[int, str] | None = None
) -> Break | None:
    """Check one chain (entries in `seq` order) against its links and its owner's head.

    An edited entry no longer matches its hash while its successor still links to it;
    an inserted one is skipped over by its successor's link (or is a copy of another
    entry); a deleted one leaves a link to a hash that is no longer there; reordered
    entries link to entries that exist, but elsewhere in the chain.
    """
    if head is UNRECORDED:
        gone = "its run's row is gone, and no retention purge recorded it"
        return Break("deleted", chain, None, None, gone)
    index: dict[str, int] = {}
    redacted_through = 0
    for position, entry in enumerate(entries):
        index.setdefault(entry.hash, position)
        if entry.event == REDACTED and isinstance(entry.data, dict):
            through = entry.data.get("through_seq")
            if isinstance(through, int) and through < entry.seq:
                redacted_through = max(redacted_through, through)
    previous = ""
    for position, entry in enumerate(entries):
        following = (
            entries[position + 1].prev_hash
            if position + 1 < len(entries)
            else (head[1] if head else entry.hash)
        )

        def broken(kind: str, message: str, at: AuditEntry = entry) -> Break:
            return Break(kind, chain, at.seq, at.pk, message)

        try:
            expected = entry_hash(entry)
        except keys.UnknownKey as exc:
            return broken("unknown key", str(exc))
        except ValueError as exc:  # an unknown hash scheme: the row was changed
            return broken("edited", str(exc))
        if entry.redacted_at is not None:
            if entry.seq > redacted_through:
                return broken("redacted", "its content was removed, and no redaction says so")
            if entry.hash_scheme != CONTENT_BY_DIGEST:
                expected = entry.hash  # its hash covered the content, which is gone
        if expected != entry.hash or not content_matches(entry):
            if following == previous and following != entry.hash:
                return broken(
                    "inserted", "it is not part of the chain: the next entry links past it"
                )
            return broken("edited", "its content no longer matches its hash")
        if index[entry.hash] != position:
            return broken("inserted", f"it copies seq {entries[index[entry.hash]].seq}")
        if entry.prev_hash != previous:
            linked = index.get(entry.prev_hash)
            if linked is None:
                return broken("deleted", "the entry it follows is missing")
            if linked == position - 2:
                return broken(
                    "inserted",
                    "it is not part of the chain: the next entry links past it",
                    entries[position - 1],
                )
            return broken("reordered", f"it follows seq {entries[linked].seq}, not its predecessor")
        previous = entry.hash
    if head is not None and head[1] != previous:
        last = entries[-1] if entries else None
        if head[1] in index:
            extra = entries[index[head[1]] + 1]
            return Break(
                "inserted", chain, extra.seq, extra.pk, "it was added after the chain's head"
            )
        return Break(
            "deleted",
            chain,
            last.seq + 1 if last else 1,
            None,
            f"entries up to seq {head[0]} are missing from the end of the chain",
        )
    return None


# What verification reads of each entry: a tuple per row, not a model instance (about
# three times cheaper at a million entries). `canonical` and `verify_chain` read
# attributes only.
CHECKED_FIELDS = tuple(
    dict.fromkeys(
        (
            "pk",
            "seq",
            "hash",
            "hash_scheme",
            "key_id",
            "content_hash",
            "redacted_at",
            "organization_id",
            *HASHED_FIELDS,
        )
    )
)
Checked = namedtuple("Checked", CHECKED_FIELDS)  # type: ignore[misc]
Chain = tuple[str, list[AuditEntry], tuple[int, str] | None]
_cursor_numbers = itertools.count()


def _rows(entries: QuerySet[AuditEntry]) -> Iterator[Any]:
    connection = connections[entries.db]
    if connection.vendor == "postgresql":
        yield from _postgresql_rows(entries)
        return
    for row in entries.values_list(*CHECKED_FIELDS).iterator(chunk_size=5000):
        yield Checked._make(row)


def _postgresql_rows(entries: QuerySet[AuditEntry]) -> Iterator[Any]:
    """The rows through a server-side cursor with the driver's own loaders.

    Django replaces psycopg's timestamp loader with one written in Python and decodes
    JSON in a converter per value: a third of the time of verifying a million entries.
    The driver's defaults (in C for timestamps) give the same values, so this cursor
    uses them.
    """
    import psycopg
    from psycopg.pq import Format

    connection = connections[entries.db]
    sql, params = entries.values_list(*CHECKED_FIELDS).query.sql_with_params()
    with transaction.atomic(using=entries.db):  # a server-side cursor lives in one
        raw = connection.connection
        assert raw is not None
        with raw.cursor(name=f"firefly_verify_{next(_cursor_numbers)}") as cursor:
            for type_name in ("timestamptz", "jsonb"):
                oid = psycopg.adapters.types[type_name].oid
                loader = psycopg.adapters.get_loader(oid, Format.TEXT)
                assert loader is not None
                cursor.adapters.register_loader(oid, loader)
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(5000):
                for row in rows:
                    yield Checked._make(row)


def chains(run_id: int | None = None, organization_id: int | None = None) -> Iterator[Chain]:
    """Every chain (or one run's, or one organization's), with its owner's head."""
    if run_id is None:
        yield from pipeline_chains(organization_id)
    yield from run_chains(run_id, organization_id)


def pipeline_chains(organization_id: int | None = None) -> Iterator[Chain]:
    """The chains of entries about no run, one per pipeline."""
    pipelines = Pipeline.objects.order_by("pk").values_list("pk", "name", "audit_seq", "audit_head")
    if organization_id is not None:
        pipelines = pipelines.filter(organization_id=organization_id)
    for pk, name, seq, head in pipelines:
        about_no_run = AuditEntry.objects.filter(pipeline_id=pk, run__isnull=True)
        yield f"pipeline {name}", list(_rows(about_no_run.order_by("seq"))), (seq, head)


def run_chains(
    run_id: int | None = None,
    organization_id: int | None = None,
    between: tuple[int, int] | None = None,
) -> Iterator[Chain]:
    """Run chains (one, one organization's, or those with run ids in a range), in run id
    order, each with its run's head.

    Two streams merged by run id (runs, and entries in (run, seq) order: the unique
    index's order) rather than a query per chain. A chain whose run row is gone is checked
    against the head its purge recorded (`retention.purged`), else it is `UNRECORDED`: a
    run deleted behind retention's back (the anchors catch a truncated end as well).
    """
    runs = Run.objects.order_by("pk")
    entries = AuditEntry.objects.filter(run__isnull=False).order_by("run_id", "seq")
    if organization_id is not None:
        runs = runs.filter(organization_id=organization_id)
        entries = entries.filter(organization_id=organization_id)
    if run_id is not None:
        runs, entries = runs.filter(pk=run_id), entries.filter(run_id=run_id)
    if between is not None:
        low, high = between
        runs = runs.filter(pk__gte=low, pk__lte=high)
        entries = entries.filter(run_id__gte=low, run_id__lte=high)
    heads = runs.values_list("pk", "audit_seq", "audit_head").iterator(chunk_size=5000)
    rows = _rows(entries)
    head_row = next(heads, None)
    row = next(rows, None)
    purged: dict[int, tuple[int, str]] | None = None  # read at the first chain without a run
    while head_row is not None or row is not None:
        head: tuple[int, str] | None = None
        if row is None or (head_row is not None and head_row[0] <= int(row.run_id)):
            assert head_row is not None
            owner, head = head_row[0], (head_row[1], head_row[2])
            head_row = next(heads, None)
        else:
            owner = int(row.run_id)
            if purged is None:
                purged = purged_heads(organization_id, run_id)
            head = purged.get(owner, UNRECORDED)
        chain: list[AuditEntry] = []
        while row is not None and row.run_id == owner:
            chain.append(row)
            row = next(rows, None)
        yield f"run {owner}", chain, head


def purged_heads(
    organization_id: int | None = None, run_id: int | None = None
) -> dict[int, tuple[int, str]]:
    """{run id: (seq, hash)} of each purged run's last entry, as its purge recorded them
    (`data.runs`: {run id: [seq, hash]}); only `run_id`'s when given.

    A record whose data does not have that shape is skipped: the pipeline chain's own
    verification reports the edit.
    """
    records = AuditEntry.objects.filter(run__isnull=True, event="retention.purged")
    if organization_id is not None:
        records = records.filter(organization_id=organization_id)
    if run_id is not None:
        records = records.filter(data__runs__has_key=str(run_id))
    heads: dict[int, tuple[int, str]] = {}
    for data in records.order_by("pipeline_id", "seq").values_list("data", flat=True):
        runs = data.get("runs") if isinstance(data, dict) else None
        for key, head in runs.items() if isinstance(runs, dict) else ():
            if key.isdigit() and isinstance(head, list) and len(head) == 2:
                heads[int(key)] = (int(head[0]), str(head[1]))
    return heads


def _verify(found: Iterator[Chain]) -> tuple[int, Break | None]:
    checked = 0
    for chain, entries, head in found:
        checked += len(entries)
        problem = verify_chain(chain, entries, head)
        if problem:
            return checked, problem
    return checked, None


def _verify_runs(between: tuple[int, int]) -> tuple[int, Break | None]:
    try:
        return _verify(run_chains(between=between))
    finally:
        connections.close_all()


def verify(
    run_id: int | None = None, organization_id: int | None = None, jobs: int = 1
) -> tuple[int, Break | None]:
    """Check every chain (or one run's, or one organization's): (entries checked, the
    first break found, or None).

    With `jobs` > 1 and no filter, run chains are checked by that many processes, each
    over its own range of run ids: the checks are CPU-bound (HMAC and JSON).
    """
    in_transaction = connections[AuditEntry.objects.db].in_atomic_block
    if jobs <= 1 or run_id is not None or organization_id is not None or in_transaction:
        # Other processes could not see what this transaction has not committed.
        return _verify(chains(run_id, organization_id))
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    checked, problem = _verify(pipeline_chains())
    ids = [
        *Run.objects.aggregate(low=Min("pk"), high=Max("pk")).values(),
        *AuditEntry.objects.aggregate(low=Min("run_id"), high=Max("run_id")).values(),
    ]
    known = [pk for pk in ids if pk is not None]
    if problem is not None or not known:
        return checked, problem
    low, high = min(known), max(known)
    width = (high - low) // jobs + 1
    ranges = [(low + i * width, low + (i + 1) * width - 1) for i in range(jobs)]
    connections.close_all()  # a forked process must open its own
    with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as pool:
        for part_checked, part_problem in pool.map(_verify_runs, ranges):
            checked += part_checked
            problem = problem or part_problem
    return checked, problem


def export_line(entry: AuditEntry) -> str:
    """One JSONL line: the hashed fields plus seq and hash, as canonical JSON."""
    values = published(entry)
    values.update(seq=entry.seq, hash=entry.hash, id=entry.pk)
    return json.dumps(values, sort_keys=True, separators=(",", ":"))
