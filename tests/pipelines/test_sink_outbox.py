"""Audit sink records go through the outbox: written with the entries, relayed once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from pipelines import dispatch, services, sinks
from pipelines.models import AuditEntry, OutboxEvent, Run

SPEC = {"name": "boxed", "steps": [{"name": "a", "type": "noop"}]}


@pytest.fixture(autouse=True)
def fresh_sinks() -> Iterator[None]:
    sinks.resolve.cache_clear()
    sinks.failures.clear()
    yield
    sinks.resolve.cache_clear()
    sinks.failures.clear()


def lines(path: Path) -> list[tuple[int | None, int, str]]:
    """(run, seq, hash) of each line the JSONL sink wrote."""
    if not path.exists():
        return []
    return [
        (record["run_id"], record["seq"], record["hash"])
        for record in map(json.loads, path.read_text().splitlines())
    ]


def expected(*runs: Run) -> list[tuple[int | None, int, str]]:
    """(run, seq, hash) of the pipeline's entries, then of each run's."""
    entries = AuditEntry.objects.filter(run__isnull=True).order_by("seq")
    found = [(e.run_id, e.seq, e.hash) for e in entries]
    for run in runs:
        entries = AuditEntry.objects.filter(run=run).order_by("seq")
        found += [(e.run_id, e.seq, e.hash) for e in entries]
    return found


@pytest.mark.django_db
def test_sink_rows_are_written_with_the_entries_and_rolled_back_with_them(settings, tmp_path):
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{tmp_path / 'audit.jsonl'}", "logging"]
    seen: list[Any] = []

    def start_then_fail() -> None:
        with transaction.atomic():
            services.pipeline_create(member_role="starter", spec=SPEC)
            run = services.run_start(pipeline="boxed", inputs={})
            seen.append(list(OutboxEvent.objects.values_list("event", "payload")))
            seen.append(run.pk)
            raise RuntimeError("the change fails after its sink rows were written")

    with pytest.raises(RuntimeError):
        start_then_fail()
    [rows, run_id] = seen
    pipeline_id = rows[0][1]["pipeline"]
    batch = {"run": run_id, "pipeline": pipeline_id, "seqs": [1]}
    started = {**batch, "seqs": [1, 2]}  # run.created and run.started, one write
    assert rows == [
        ("audit.sink", {"sink": f"jsonl:{tmp_path / 'audit.jsonl'}", **batch, "run": None}),
        ("audit.sink", {"sink": "logging", **batch, "run": None}),
        ("audit.sink", {"sink": f"jsonl:{tmp_path / 'audit.jsonl'}", **started}),
        ("audit.sink", {"sink": "logging", **started}),
    ]
    assert not OutboxEvent.objects.exists()
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_without_sinks_no_row_is_written(settings):
    settings.FIREFLY_AUDIT_SINKS = []
    services.pipeline_create(member_role="starter", spec=SPEC)
    run = services.run_start(pipeline="boxed", inputs={})
    services.run_advance(run_id=run.pk)
    assert AuditEntry.objects.count() >= 3
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_each_entry_is_relayed_once(settings, tmp_path):
    path = tmp_path / "audit.jsonl"
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{path}"]
    services.pipeline_create(member_role="starter", spec=SPEC)
    run = services.run_start(pipeline="boxed", inputs={})
    services.run_advance(run_id=run.pk)  # nothing left to do: no entry, no row

    assert services.outbox_relay() == 2  # the pipeline's write, the run's start
    assert services.outbox_relay() == 0
    assert services.outbox_sweep() == 0
    assert lines(path) == expected(run)
    assert not OutboxEvent.objects.filter(relayed_at__isnull=True).exists()


@pytest.mark.django_db
def test_a_failing_sink_leaves_its_row_for_the_sweep(settings, tmp_path):
    folder = tmp_path / "later"
    path = folder / "audit.jsonl"
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{path}"]
    services.pipeline_create(member_role="starter", spec=SPEC)
    run = services.run_start(pipeline="boxed", inputs={})

    assert services.outbox_relay() == 0  # the folder is missing: the sink fails
    rows = OutboxEvent.objects.all()
    assert [(row.relayed_at, row.attempts) for row in rows] == [(None, 1), (None, 1)]
    assert all("FileNotFoundError" in row.last_error for row in rows)
    assert sinks.failures == {f"jsonl:{path}": 2}
    assert not path.exists()

    folder.mkdir()
    settings.FIREFLY_OUTBOX_RELAY_AFTER_S = 0
    assert services.reap().relayed == 2
    assert services.outbox_sweep() == 0
    assert lines(path) == expected(run)


@pytest.mark.django_db
def test_a_new_pipeline_version_asks_for_a_relay(settings, tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{path}"]
    asked: list[bool] = []
    monkeypatch.setattr(dispatch, "relay_outbox", lambda: asked.append(True))

    services.pipeline_create(member_role="starter", spec=SPEC)
    assert asked == [True]
    services.pipeline_create(member_role="starter", spec=SPEC)  # unchanged: no new entry
    assert asked == [True]
    assert services.outbox_relay() == 1
    assert lines(path) == expected()


# Commits a run's first entries, then dies before any on-commit callback runs: the
# hook registered first runs first and kills the process with SIGKILL.
CRASH = """
import os, signal
import django
django.setup()
from django.db import transaction
from django.utils import timezone
from pipelines import services
with transaction.atomic():
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    services.pipeline_create(member_role="starter", spec={spec!r})
    services.run_start(pipeline="boxed", inputs={{}})
"""


@pytest.mark.django_db(transaction=True)
def test_entries_committed_by_a_killed_process_reach_the_sink_once(settings, tmp_path):
    from tests.workers import ROOT, database_url

    path = tmp_path / "audit.jsonl"
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{path}"]
    env: dict[str, Any] = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings",
        "DATABASE_URL": database_url(),
        "PYTHONPATH": str(ROOT),
        "FIREFLY_AUDIT_SINKS": f"jsonl:{path}",
    }
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH.format(spec=SPEC)], cwd=ROOT, env=env, capture_output=True
    )
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    run = Run.objects.get()  # the change committed
    assert OutboxEvent.objects.filter(relayed_at__isnull=True).count() == 2  # and its rows
    assert not path.exists()  # nothing was published

    settings.FIREFLY_OUTBOX_RELAY_AFTER_S = 0
    assert services.reap().relayed == 2
    assert services.outbox_sweep() == 0
    assert services.outbox_relay() == 0
    assert lines(path) == expected(run)


@pytest.mark.django_db
def test_the_sweep_waits_longer_after_each_failed_attempt(settings, tmp_path):
    path = tmp_path / "audit.jsonl"
    settings.FIREFLY_AUDIT_SINKS = [f"jsonl:{path}"]
    settings.FIREFLY_OUTBOX_RELAY_AFTER_S = 30
    services.pipeline_create(member_role="starter", spec=SPEC)
    now = timezone.now()
    OutboxEvent.objects.update(attempts=2, created_at=now - timedelta(seconds=100))

    assert services.outbox_sweep() == 0  # due 120 s after it was written
    OutboxEvent.objects.update(created_at=now - timedelta(seconds=125))
    assert services.outbox_sweep() == 1
    assert lines(path) == expected()
