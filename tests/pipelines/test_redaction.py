"""Redaction: a run's content can be erased while its chain still proves order and
completeness, and nothing but that exact change gets past the database."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from pipelines import audit
from pipelines.models import AuditEntry, Run
from tests.pipelines.test_audit import TABLE, finished_run, tamper, verify

pytestmark = pytest.mark.django_db

REDACTION = (
    "inputs = NULL, outputs = NULL, data = NULL, error_message = '', pause_reason = '', "
    "redacted_at = now()"
)


def redact(run: Run, reason: str = "erasure request 17") -> AuditEntry:
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        chain = audit.AuditChain(locked, locked.pipeline_version.pipeline_id)
        entry = audit.redact(chain, actor=None, reason=reason)
        chain.flush()
        locked.save(update_fields=["audit_seq", "audit_head"])
    return entry


def test_redaction_empties_the_content_and_the_chain_still_verifies():
    run = finished_run()
    before = run.audit_seq
    entry = redact(run)

    entries = list(AuditEntry.objects.filter(run=run).order_by("seq"))
    assert [e.seq for e in entries] == list(range(1, before + 2))
    redacted, last = entries[:-1], entries[-1]
    assert all(e.redacted_at is not None for e in redacted)
    assert all(e.inputs is None and e.outputs is None and e.data is None for e in redacted)
    assert last.pk == entry.pk
    assert last.event == "audit.redacted"
    assert last.redacted_at is None
    assert last.data == {"reason": "erasure request 17", "through_seq": before, "count": before}
    assert "audit trail intact" in verify("--run", str(run.pk))


def test_a_second_redaction_covers_the_first_one(tmp_path):
    run = finished_run()
    redact(run, "retention")
    redact(run, "erasure request")
    first = AuditEntry.objects.filter(run=run, event="audit.redacted").order_by("seq")[0]
    assert first.redacted_at is not None
    assert first.data is None
    assert "audit trail intact" in verify("--run", str(run.pk))
    # The export carries the redacted entries as they are now, and checks against them.
    path = tmp_path / "export.jsonl"
    call_command("export_audit", "--run", str(run.pk), "--output", str(path))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["redacted"]
    assert lines[0]["inputs"] is None
    assert "audit trail intact" in verify("--against", str(path))


def test_a_redaction_needs_a_reason():
    run = finished_run()
    with pytest.raises(ValueError, match="needs a reason"):
        redact(run, "  ")
    assert not AuditEntry.objects.filter(run=run, redacted_at__isnull=False).exists()


def test_a_silent_redaction_is_named():
    """An insider empties entries the way the trigger allows, without recording it."""
    run = finished_run()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET {REDACTION} WHERE run_id = %s AND seq = 3", [run.pk])
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 3 .*: redacted: .*no redaction"):
        verify("--run", str(run.pk))


@pytest.mark.parametrize(
    "change",
    [
        f"{REDACTION}, hash = repeat('0', 64)",
        f"{REDACTION}, content_hash = repeat('0', 64)",
        f"{REDACTION}, status = 'forged'",
        "inputs = '{\"x\": 2}', redacted_at = now()",
        "outputs = NULL",
    ],
)
def test_the_database_lets_only_a_plain_redaction_through(change):
    run = finished_run()
    with (
        transaction.atomic(),
        connection.cursor() as cursor,
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
    ):
        cursor.execute(f"UPDATE {TABLE} SET {change} WHERE run_id = %s AND seq = 3", [run.pk])
    assert "audit trail intact" in verify("--run", str(run.pk))


def test_an_entry_is_redacted_only_once():
    run = finished_run()
    redact(run)
    with (
        transaction.atomic(),
        connection.cursor() as cursor,
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
    ):
        cursor.execute(
            f"UPDATE {TABLE} SET redacted_at = now() WHERE run_id = %s AND seq = 2", [run.pk]
        )


def test_forging_content_into_a_redacted_entry_is_named():
    run = finished_run()
    redact(run)
    tamper(f"UPDATE {TABLE} SET redacted_at = NULL WHERE run_id = {run.pk} AND seq = 3")
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 3 .*: edited"):
        verify("--run", str(run.pk))
