"""The audit trail: complete, in the same transaction, append-only and tamper-evident."""

from __future__ import annotations

import io
import itertools
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from orgs import rls
from pipelines import services
from pipelines.audit import entry_hash
from pipelines.models import AuditEntry, Run, StepRun

pytestmark = pytest.mark.django_db

TABLE = AuditEntry._meta.db_table
STEPS = [
    {"name": "a", "type": "noop"},
    {"name": "b", "type": "noop", "after": ["a"]},
    {"name": "c", "type": "noop", "after": ["b"]},
]


def finished_run(name: str = "chain", steps: list | None = None) -> Run:
    """A run executed in-process: run.created, run.started, 3 steps, run.finished."""
    services.pipeline_create(member_role="starter", spec={"name": name, "steps": steps or STEPS})
    run = services.run_start(pipeline=name, inputs={"x": 1})
    services.run_advance(run_id=run.pk)
    services.step_execute(step_run_id=run.steps.get(step_name="a").pk)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    return run


def events(run: Run) -> list[tuple[str, str]]:
    return list(
        AuditEntry.objects.filter(run=run).order_by("seq").values_list("event", "step_name")
    )


def tamper(*statements: str) -> None:
    """Run raw SQL with the append-only trigger off (superuser only), as an attacker would."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        for sql in statements:
            cursor.execute(sql)


def verify(*args: str) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def test_each_entry_links_to_the_previous_one_with_a_keyed_hash():
    run = finished_run()
    entries = list(AuditEntry.objects.filter(run=run).order_by("seq"))

    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0].prev_hash == ""
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    assert all(entry_hash(e) == e.hash for e in entries)
    assert (run.audit_seq, run.audit_head) == (entries[-1].seq, entries[-1].hash)
    output = verify("--run", str(run.pk))
    assert "audit trail intact" in output
    assert "entries/s" in output


def test_a_visit_records_its_times_latency_and_outputs():
    run = finished_run()
    visit = AuditEntry.objects.get(run=run, event="step.succeeded", step_name="b")
    assert visit.status == "succeeded"
    assert visit.outputs == {}
    assert visit.started_at <= visit.completed_at
    assert visit.latency_ms is not None
    assert visit.actor_name == "system"


def test_every_service_writes_exactly_its_entries():
    services.pipeline_create(member_role="starter", spec={"name": "walk", "steps": STEPS})
    assert list(AuditEntry.objects.filter(run__isnull=True).values_list("event", flat=True)) == [
        "pipeline.version_created"
    ]

    run = services.run_start(pipeline="walk", inputs={})
    assert events(run) == [("run.created", ""), ("run.started", "")]

    services.run_advance(run_id=run.pk)  # nothing more is ready: no entry
    assert len(events(run)) == 2

    services.step_execute(step_run_id=run.steps.get(step_name="a").pk)
    assert events(run)[2:] == [
        ("step.succeeded", "a"),
        ("step.succeeded", "b"),
        ("step.succeeded", "c"),
        ("run.finished", ""),
    ]

    fork = services.run_fork(run_id=run.pk, checkpoint_seq=1)
    assert events(fork) == [("run.created", "")]

    services.run_cancel(run_id=fork.pk)
    assert events(fork)[1:] == [("run.cancelled", ""), ("run.finished", "")]

    services.pipeline_create(
        member_role="starter",
        spec={"name": "flaky", "steps": [{"name": "f", "type": "fail", "config": {"times": 1}}]},
    )
    failing = services.run_start(pipeline="flaky", inputs={})
    services.run_advance(run_id=failing.pk)
    services.step_execute(step_run_id=failing.steps.get().pk)
    assert events(failing)[2:] == [("step.failed", "f"), ("run.finished", "")]

    services.run_resume(run_id=failing.pk)
    assert events(failing)[4:] == [("run.resumed", "")]

    services.pipeline_create(
        member_role="starter", spec={"name": "slow", "steps": [{"name": "s", "type": "noop"}]}
    )
    lost = services.run_start(pipeline="slow", inputs={})
    services.run_advance(run_id=lost.pk)
    step = lost.steps.get()
    services.step_begin(step_run_id=step.pk)
    StepRun.objects.filter(pk=step.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    services.reap()
    assert events(lost)[2:] == [("step.lost", "s")]


def test_rollback_writes_its_entry_with_the_reset_steps():
    run = finished_run()
    run.status = Run.Status.FAILED  # a finished run cannot roll back; a failed one can
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED)
    services.run_rollback(run_id=run.pk, to_step="b", comment="redo")
    entry = AuditEntry.objects.filter(run=run).order_by("-seq")[0]
    assert (entry.event, entry.step_name) == ("run.rolled_back", "b")
    assert entry.data["reset"] == ["b", "c"]
    assert entry.data["comment"] == "redo"


def test_a_failure_inside_the_transaction_leaves_neither_change_nor_entry(monkeypatch):
    services.pipeline_create(member_role="starter", spec={"name": "atomic", "steps": STEPS})
    run = services.run_start(pipeline="atomic", inputs={})
    before = events(run)
    steps_before = sorted(run.steps.values_list("step_name", "status"))
    original = services.RunTxn.flush

    def flush_then_fail(self: services.RunTxn, commit: bool = False) -> None:
        original(self)  # the writes, but not the commit
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services.RunTxn, "flush", flush_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        services.run_cancel(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING  # as it was: the cancel left nothing behind
    assert events(run) == before
    assert sorted(run.steps.values_list("step_name", "status")) == steps_before


def test_large_snapshots_are_replaced_by_a_marker_with_size_and_hash(settings):
    settings.FIREFLY_AUDIT_SNAPSHOT_LIMIT = 100
    services.pipeline_create(
        member_role="starter", spec={"name": "big", "steps": [{"name": "a", "type": "noop"}]}
    )
    run = services.run_start(pipeline="big", inputs={"text": "x" * 500})

    snapshot = AuditEntry.objects.get(run=run, event="run.created").inputs
    assert snapshot["truncated"] is True
    assert snapshot["size"] == len(json.dumps({"text": "x" * 500}, separators=(",", ":")))
    assert len(snapshot["sha256"]) == 64
    assert "verify" not in snapshot
    assert "audit trail intact" in verify("--run", str(run.pk))


def test_the_model_refuses_changes_and_deletes():
    run = finished_run()
    entry = AuditEntry.objects.filter(run=run).first()
    entry.status = "forged"
    with pytest.raises(TypeError, match="immutable"):
        entry.save()
    with pytest.raises(TypeError, match="immutable"):
        entry.delete()
    with pytest.raises(TypeError, match="immutable"):
        AuditEntry.objects.filter(run=run).update(status="forged")


@pytest.mark.parametrize(
    "sql",
    [
        f"UPDATE {TABLE} SET status = 'forged'",
        f"DELETE FROM {TABLE}",
        pytest.param(
            f"TRUNCATE {TABLE} CASCADE",
            # TRUNCATE needs no pending deferred checks: run it outside a test transaction.
            marks=pytest.mark.django_db(transaction=True),
        ),
    ],
)
def test_the_database_refuses_raw_update_delete_and_truncate(sql):
    finished_run()
    with transaction.atomic(), connection.cursor() as cursor:
        # As a role that holds every privilege on the table but is no superuser (the
        # suite's own login is one, and may TRUNCATE to clean up): the trigger refuses,
        # whatever the session sets. The grant is undone with the transaction.
        cursor.execute(f"GRANT ALL ON {TABLE} TO {rls.ROLE}")
        cursor.execute(f"SET LOCAL ROLE {rls.ROLE}")
        cursor.execute("SET LOCAL firefly.audit_truncate = 'allow'")
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            cursor.execute(sql)
        transaction.set_rollback(True)
    assert AuditEntry.objects.exclude(status="forged").count() == AuditEntry.objects.count() > 0


def seq_sql(run: Run, assignment: str, where: str) -> str:
    return f"UPDATE {TABLE} SET {assignment} WHERE run_id = {run.pk} AND {where}"


def test_verify_names_an_edited_entry():
    run = finished_run()
    tamper(seq_sql(run, 'outputs = \'{"deployed": "evil"}\'', "seq = 3"))
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 3 .*: edited"):
        verify()


def test_verify_names_a_deleted_entry():
    run = finished_run()
    tamper(f"DELETE FROM {TABLE} WHERE run_id = {run.pk} AND seq = 3")
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 4 .*: deleted"):
        verify("--run", str(run.pk))


def test_verify_names_an_inserted_entry():
    run = finished_run()
    third = AuditEntry.objects.get(run=run, seq=3)
    columns = [f.column or "" for f in AuditEntry._meta.concrete_fields]
    columns = [c for c in columns if c not in ("id", "seq")]
    copied = ", ".join(columns)
    tamper(
        seq_sql(run, "seq = seq + 100", "seq >= 3"),
        seq_sql(run, "seq = seq - 99", "seq >= 103"),
        f"INSERT INTO {TABLE} (seq, {copied}) SELECT 3, {copied.replace('outputs', 'outputs')} "
        f"FROM {TABLE} WHERE id = {third.pk}",
        seq_sql(run, "outputs = '{\"approved\": true}', hash = repeat('f', 64)", "seq = 3"),
    )
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 3 .*: inserted"):
        verify("--run", str(run.pk))


def test_verify_names_reordered_entries():
    run = finished_run()
    tamper(
        seq_sql(run, "seq = 1000", "seq = 3"),
        seq_sql(run, "seq = 3", "seq = 4"),
        seq_sql(run, "seq = 4", "seq = 1000"),
    )
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 3 .*: reordered"):
        verify("--run", str(run.pk))


def test_an_export_catches_a_tail_cut_that_leaves_the_chain_consistent(tmp_path):
    run = finished_run()
    export = tmp_path / "audit.jsonl"
    call_command(
        "export_audit", "--run", str(run.pk), "--output", str(export), stderr=io.StringIO()
    )
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, run.audit_seq + 1))
    assert lines[-1]["hash"] == run.audit_head
    assert "audit trail intact" in verify("--against", str(export))

    # Someone with database access drops the last entry and rewinds the run's head:
    # the chain alone still verifies, the export kept elsewhere does not.
    last, before_last = AuditEntry.objects.filter(run=run).order_by("-seq")[:2]
    tamper(f"DELETE FROM {TABLE} WHERE id = {last.pk}")
    Run.objects.filter(pk=run.pk).update(audit_seq=before_last.seq, audit_head=before_last.hash)
    assert "audit trail intact" in verify("--run", str(run.pk))
    with pytest.raises(CommandError, match=rf"seq {last.seq} .*: deleted"):
        verify("--against", str(export))


def test_a_deleted_tail_is_caught_by_the_run_head():
    run = finished_run()
    tamper(f"DELETE FROM {TABLE} WHERE run_id = {run.pk} AND seq = {run.audit_seq}")
    with pytest.raises(CommandError, match="deleted: entries up to seq"):
        verify("--run", str(run.pk))


def test_export_by_date_range_and_bad_arguments(tmp_path):
    finished_run()
    out = tmp_path / "day.jsonl"
    today = timezone.now().date().isoformat()
    call_command("export_audit", "--since", today, "--output", str(out), stderr=io.StringIO())
    assert len(out.read_text().splitlines()) == AuditEntry.objects.count()
    with pytest.raises(CommandError, match="Give --run ID"):
        call_command("export_audit")
    with pytest.raises(CommandError, match="not a date"):
        call_command("export_audit", "--since", "yesterday-ish")
