"""Retention: erasing a finished run's data (on request or by age) and purging old runs."""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from orgs import selectors as orgs
from pipelines import anchors, audit, permissions, sinks
from pipelines.audit import AuditChain, export_line
from pipelines.errors import Conflict, FireflyError, InvalidInput, NotFound, PermissionDenied
from pipelines.models import (
    AuditEntry,
    Checkpoint,
    HandoffEnvelope,
    OutboxEvent,
    Pipeline,
    PipelineVersion,
    Run,
    StepRun,
)
from pipelines.services import hooks
from pipelines.versions import version_info

log = logging.getLogger(__name__)

REASON_MAX = 1000
# Runs named in one `retention.purged` entry: its data stays well under the audit
# snapshot limit, which would otherwise replace the heads by a digest.
PURGED_PER_ENTRY = 100


# --- erasure --------------------------------------------------------------------------


def run_redact(*, run_id: int, actor: Any = None, reason: str) -> AuditEntry:
    """Erase a finished run's data wherever it lives, and redact its audit entries.

    Step inputs, outputs and errors, checkpoint data, the run's inputs, output, error and
    disposition, handoff payloads and decisions, outbox payloads, and what other apps keep
    (task context, decision data, webhook payloads: `hooks.on_erase`) are emptied in one
    transaction under the run's row lock; `audit.redact` empties its entries' content
    (their hashes still link the chain) and appends an `audit.redacted` entry naming who
    and why, which is returned. `actor` None is Firefly itself (an operator's command).

    Refused, with a `run.refused` entry in the run's chain, to anyone but the admins of
    the run's organization, and for a run not finished (its steps would write new data).
    """
    why = reason.strip() if isinstance(reason, str) else ""
    if not why:
        raise InvalidInput("Give the reason for the erasure: it is recorded in the audit trail.")
    if len(why) > REASON_MAX:
        raise InvalidInput(f"The reason is {len(why):,} characters; the limit is {REASON_MAX:,}.")
    with transaction.atomic():
        runs = lock_runs([run_id])
        if not runs:
            raise NotFound(f"No run {run_id}.")
        run = runs[0]
        refusal = _refusal(run, actor)
        if refusal is not None:
            _refused(run, actor, refusal, why)
        else:
            entries = erase(runs, actor=actor, reason=why, now=timezone.now())
    if refusal is not None:
        raise refusal  # after the commit: the refusal's entry is the evidence
    return entries[run_id]


def _refusal(run: Run, actor: Any) -> FireflyError | None:
    if actor is not None and not permissions.allowed(
        actor, "manage_organization", run.organization_id
    ):
        if not permissions.allowed(actor, "view_run", run):
            return NotFound(f"No run {run.pk}.")
        return PermissionDenied("Only the admins of the run's organization may erase its data.")
    if not run.is_finished:
        return Conflict(
            f"Run {run.pk} is {run.status}: only a finished run's data can be erased"
            " (its steps would write more). Cancel it first."
        )
    return None


def _refused(run: Run, actor: Any, refusal: FireflyError, reason: str) -> None:
    person = permissions.is_person(actor)
    chain = AuditChain(run, version_info(run.pipeline_version_id).pipeline_id)
    chain.add(
        "run.refused",
        actor=actor if person else None,
        status=run.status,
        error_message=str(refusal),
        data={"action": "redact", "reason": reason},
    )
    _save_chains([(run, chain)], {})


def lock_runs(run_ids: Iterable[int], *, skip_locked: bool = False) -> list[Run]:
    """The runs' rows, locked for this transaction in id order (no deadlock between two
    lockers); with `skip_locked`, rows another transaction holds are left out."""
    return list(
        Run.objects.select_for_update(skip_locked=skip_locked)
        .filter(pk__in=list(run_ids))
        .order_by("pk")
    )


def erase(runs: list[Run], *, actor: Any, reason: str, now: datetime) -> dict[int, AuditEntry]:
    """Empty the data of locked, finished runs in bulk; redact each one's audit chain.

    Returns each run's `audit.redacted` entry. The run objects carry their new heads.
    """
    ids = [run.pk for run in runs]
    StepRun.objects.filter(run_id__in=ids).update(inputs=None, outputs=None, error="")
    # Checkpoints are history and their manager refuses updates: erasure is the exception.
    Checkpoint._base_manager.filter(run_id__in=ids).update(data=None, pause_reason="")
    HandoffEnvelope.objects.filter(Q(origin_run_id__in=ids) | Q(child_run_id__in=ids)).update(
        payload={}, decision=None
    )
    _erase_outbox(runs)
    for hook in hooks.erase_hooks:
        hook(ids)
    entries: dict[int, AuditEntry] = {}
    chains = []
    for run in runs:
        chain = AuditChain(run, version_info(run.pipeline_version_id).pipeline_id)
        entries[run.pk] = audit.redact(chain, actor=actor, reason=reason, now=now)
        chains.append((run, chain))
    erased: dict[str, Any] = {
        "inputs": {},
        "output": None,
        "error": "",
        "disposition": None,
        "redacted_at": now,
    }
    _save_chains(chains, erased)
    return entries


def _erase_outbox(runs: list[Run]) -> None:
    """Events about the runs keep who and what (the relay still needs the organization),
    not their data; sent ones cannot be called back. One read for the batch: the outbox
    has no index on the run (its rows live FIREFLY_OUTBOX_KEEP_DAYS)."""
    by_id = {run.pk: run for run in runs}
    found = OutboxEvent.objects.filter(payload__run__in=list(by_id)).values_list("pk", "payload")
    for pk, payload in found:
        run = by_id[payload["run"]]
        kept = {
            "organization": orgs.slug_of(run.organization_id),
            "run": run.pk,
            "pipeline": version_info(run.pipeline_version_id).pipeline_name,
            "redacted": True,
        }
        OutboxEvent.objects.filter(pk=pk).update(payload=kept)


def _save_chains(chains: list[tuple[Run, AuditChain]], fields: dict[str, Any]) -> None:
    """Write the chains' entries and each run's new heads (and `fields`): one INSERT of
    the entries (with their sink rows) and one UPDATE of the runs for the whole batch."""
    entries = [entry for _, chain in chains for entry in chain.entries]
    sink_rows = [row for _, chain in chains for row in sinks.outbox_rows(chain.entries)]
    AuditEntry.objects.bulk_create(entries)
    OutboxEvent.objects.bulk_create(sink_rows)
    for run, chain in chains:
        chain.entries = []
        for name, value in fields.items():
            setattr(run, name, value)
        run.revision += 1  # a worker's snapshot of the run is stale now
    Run.objects.bulk_update(
        [run for run, _ in chains], ["audit_seq", "audit_head", "revision", *fields]
    )


# --- the beat job ---------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Days a finished run keeps its data and itself (None: forever)."""

    outputs_days: int | None
    runs_days: int | None


def version_limits(spec: Any) -> Limits:
    """A version's retention: its spec's, else the settings' defaults."""
    own = spec.get("retention", {}) if isinstance(spec, dict) else {}
    outputs = own.get("outputs_days", settings.FIREFLY_RETENTION_OUTPUTS_DAYS)
    runs = own.get("runs_days", settings.FIREFLY_RETENTION_RUNS_DAYS)
    return Limits(
        int(outputs) if outputs is not None else None, int(runs) if runs is not None else None
    )


def limits_by_version() -> dict[Limits, list[int]]:
    """Version ids by their retention; versions that keep everything are left out."""
    found: dict[Limits, list[int]] = defaultdict(list)
    for version_id, spec in PipelineVersion.objects.values_list("pk", "spec").iterator():
        limits = version_limits(spec)
        if limits.outputs_days is not None or limits.runs_days is not None:
            found[limits].append(version_id)
    return found


@dataclass
class RetentionReport:
    redacted: int = 0
    purged: int = 0
    batches: int = 0
    segments: list[str] = field(default_factory=list)
    # The longest batch, in seconds: about how long a batch held its runs' locks.
    longest_batch_s: float = 0.0

    def timed(self, started: float) -> None:
        self.batches += 1
        self.longest_batch_s = max(self.longest_batch_s, time.monotonic() - started)


def retention_apply(*, now: datetime | None = None) -> RetentionReport:
    """Erase the data of runs past their outputs_days, then purge runs past runs_days.

    Run by Celery beat. Works in batches of FIREFLY_RETENTION_BATCH runs, one short
    transaction each that skips runs another transaction holds (SKIP LOCKED: a worker
    or a person acting on a run is never waited for; the run is taken next time), with a
    pause between batches; stops after FIREFLY_RETENTION_BUDGET_S and goes on next time.
    """
    now = now or timezone.now()
    report = RetentionReport()
    deadline = time.monotonic() + settings.FIREFLY_RETENTION_BUDGET_S
    groups = limits_by_version()
    for limits, version_ids in groups.items():
        if limits.outputs_days is not None:
            cutoff = now - timedelta(days=limits.outputs_days)
            reason = f"retention: data kept {limits.outputs_days} days after the run finished"
            candidates = Run.objects.filter(
                pipeline_version_id__in=version_ids,
                finished_at__lt=cutoff,
                redacted_at__isnull=True,
                status__in=Run.FINISHED,
            )
            while time.monotonic() < deadline:
                started = time.monotonic()
                done = _redact_batch(candidates, reason, now)
                if done is None:
                    break
                report.redacted += done
                report.timed(started)
                _give_way(started)
    for limits, version_ids in groups.items():
        if limits.runs_days is not None:
            cutoff = now - timedelta(days=limits.runs_days)
            reason = f"retention: runs kept {limits.runs_days} days after they finished"
            candidates = Run.objects.filter(
                pipeline_version_id__in=version_ids,
                finished_at__lt=cutoff,
                status__in=Run.FINISHED,
            )
            while time.monotonic() < deadline:
                started = time.monotonic()
                purged = purge_batch(candidates, reason=reason, now=now)
                if purged is None:
                    break
                report.purged += purged[0]
                if purged[1]:
                    report.segments.append(purged[1])
                report.timed(started)
                _give_way(started)
    if report.redacted or report.purged:
        log.info("retention: %s", report)
    return report


def _give_way(started: float) -> None:
    """Pause after a batch, so that the job is idle FIREFLY_RETENTION_IDLE_SHARE of the
    time (at least FIREFLY_RETENTION_PAUSE_S): its CPU and I/O leave room for the pages
    and the workers on a busy machine."""
    share = min(max(settings.FIREFLY_RETENTION_IDLE_SHARE, 0.0), 0.95)
    busy = time.monotonic() - started
    time.sleep(max(settings.FIREFLY_RETENTION_PAUSE_S, busy * share / (1 - share)))


def _candidates(queryset: Any) -> list[int]:
    return list(
        queryset.order_by("finished_at").values_list("pk", flat=True)[
            : settings.FIREFLY_RETENTION_BATCH
        ]
    )


def _redact_batch(candidates: Any, reason: str, now: datetime) -> int | None:
    """Erase one batch; None when no run is left to erase."""
    ids = _candidates(candidates)
    if not ids:
        return None
    with transaction.atomic():
        # Filtered again under the lock: a run may have been resumed or erased meanwhile.
        runs = [
            run
            for run in lock_runs(ids, skip_locked=True)
            if run.is_finished and run.redacted_at is None
        ]
        if runs:
            erase(runs, actor=None, reason=reason, now=now)
    # None erased: the rest are held by others (or changed meanwhile): next time.
    return len(runs) or None


def purge_batch(
    candidates: Any, *, reason: str, now: datetime | None = None
) -> tuple[int, str] | None:
    """Purge one batch of finished runs: erased first (if they were not), archived (when
    an archive folder is set), then deleted with everything that hangs off them. Their
    audit entries stay, redacted; the pipeline's chain records a `retention.purged` entry
    naming each run with the last seq and hash of its chain, which `verify_audit` checks
    the purged chains against. Returns (runs purged, segment path or ""), or None when
    no run is left to purge.
    """
    now = now or timezone.now()
    archive_dir = settings.FIREFLY_RETENTION_ARCHIVE_DIR
    if settings.FIREFLY_RETENTION_ARCHIVE_REQUIRED and not archive_dir:
        log.error("retention: nothing purged: archiving is required and no folder is set")
        return None
    ids = _candidates(candidates)
    if not ids:
        return None
    segment = ""
    with transaction.atomic():
        runs = [run for run in lock_runs(ids, skip_locked=True) if run.is_finished]
        if runs:
            unerased = [run for run in runs if run.redacted_at is None]
            if unerased:
                erase(unerased, actor=None, reason=reason, now=now)
            purged = [run.pk for run in runs]
            if archive_dir:
                segment = str(archive(purged, Path(archive_dir), now))
            _delete(purged)
            _record_purge(runs, reason=reason, segment=segment, now=now)
    if not runs:
        return None  # the rest are held by others (or were resumed): next time
    return len(runs), segment


def archive(run_ids: list[int], folder: Path, now: datetime) -> Path:
    """Write the runs' audit entries (export_audit lines) and the newest anchor to a new
    segment, on disk (fsynced, then renamed into place) before the caller deletes
    anything."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"audit-{now:%Y%m%dT%H%M%S%f}-runs-{run_ids[0]}-{run_ids[-1]}.jsonl"
    path = folder / name
    partial = folder / f".{name}.partial"
    entries = AuditEntry.objects.filter(run_id__in=run_ids).order_by("run_id", "seq")
    with partial.open("w") as out:
        for entry in entries.iterator(chunk_size=2000):
            out.write(export_line(entry) + "\n")
        anchor = anchors.newest_anchor()
        if anchor is not None:
            out.write(anchor + "\n")
        out.flush()
        os.fsync(out.fileno())
    partial.rename(path)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
    return path


def _delete(run_ids: list[int]) -> None:
    """Delete the runs and their rows, children first (the foreign keys are checked)."""
    for hook in hooks.purge_hooks:
        hook(run_ids)
    # Rows of other runs that point at these keep their own data, without the link.
    Run.objects.filter(parent_id__in=run_ids).exclude(pk__in=run_ids).update(parent=None)
    Run.objects.filter(forked_from_id__in=run_ids).exclude(pk__in=run_ids).update(forked_from=None)
    HandoffEnvelope.objects.filter(child_run_id__in=run_ids).exclude(
        origin_run_id__in=run_ids
    ).update(child_run=None)
    OutboxEvent.objects.filter(relayed_at__isnull=False, payload__run__in=run_ids).delete()
    # Plain deletes: Django's cascade would first load every row it deletes.
    for queryset in (
        HandoffEnvelope.objects.filter(origin_run_id__in=run_ids),
        Checkpoint._base_manager.filter(run_id__in=run_ids),
        StepRun.objects.filter(run_id__in=run_ids),
        Run.objects.filter(pk__in=run_ids),
    ):
        queryset._raw_delete(queryset.db)


def _record_purge(runs: list[Run], *, reason: str, segment: str, now: datetime) -> None:
    """One `retention.purged` entry per pipeline (and per PURGED_PER_ENTRY runs) in the
    pipeline's chain: the runs and the heads their chains ended at."""
    by_pipeline: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_pipeline[version_info(run.pipeline_version_id).pipeline_id].append(run)
    for pipeline_id in sorted(by_pipeline):
        pipeline = Pipeline.objects.select_for_update().get(pk=pipeline_id)
        chain = AuditChain(pipeline, pipeline.pk)
        listed = by_pipeline[pipeline_id]
        for start in range(0, len(listed), PURGED_PER_ENTRY):
            part = listed[start : start + PURGED_PER_ENTRY]
            chain.add(
                "retention.purged",
                data={
                    "reason": reason,
                    # Keyed by the run's id: verify_audit --run finds a run's record by it.
                    "runs": {str(run.pk): [run.audit_seq, run.audit_head] for run in part},
                    "archive": Path(segment).name if segment else "",
                },
                now=now,
            )
        chain.flush()
        Pipeline.objects.filter(pk=pipeline.pk).update(
            audit_seq=pipeline.audit_seq, audit_head=pipeline.audit_head
        )
