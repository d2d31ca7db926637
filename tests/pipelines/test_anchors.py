"""The anchored audit chain, tested as the attacks: each tampering that leaves the chains
consistent in the database is caught by `verify_audit --anchors`, and named."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.test import override_settings

from orgs import rls
from pipelines import anchor_checks, anchors, services, tasks
from pipelines.canonical import canonical
from pipelines.models import AuditEntry, AuditLedger, LedgerState, Run
from tests.pipelines.test_audit import STEPS, finished_run, tamper
from tests.security.test_least_privilege import PASSWORD, connect_as, role_name

ENTRIES = AuditEntry._meta.db_table
LEDGER = AuditLedger._meta.db_table
RUNS = Run._meta.db_table
ATTACKER_KEY = b"a key the attacker chose, not one of Firefly's"


@pytest.fixture(autouse=True)
def anchor_stores(settings, tmp_path: Path) -> Path:
    """Each test anchors to a file and a SQLite database of its own."""
    settings.FIREFLY_ANCHOR_FILE = str(tmp_path / "worm" / "anchors.jsonl")
    settings.FIREFLY_ANCHOR_DATABASE_URL = f"sqlite:///{tmp_path / 'anchors.sqlite3'}"
    return tmp_path


def anchor_file() -> Path:
    return Path(settings.FIREFLY_ANCHOR_FILE)


def anchor_lines() -> list[dict]:
    return [json.loads(line) for line in anchor_file().read_text().splitlines()]


def verify_anchors() -> str:
    out = io.StringIO()
    call_command("verify_audit", "--anchors", stdout=out)
    return out.getvalue()


def anchored_run(name: str = "chain") -> Run:
    run = finished_run(name)
    anchors.anchor_audit()
    return run


def deleting(run: Run) -> list[str]:
    """The statements that delete a run whole: its entries, steps, checkpoints and row."""
    return [
        f"DELETE FROM {ENTRIES} WHERE run_id = {run.pk}",
        f"DELETE FROM pipelines_steprun WHERE run_id = {run.pk}",
        f"DELETE FROM pipelines_checkpoint WHERE run_id = {run.pk}",
        f"DELETE FROM {RUNS} WHERE id = {run.pk}",
    ]


def entries_of(run: Run) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(run=run).order_by("seq"))


# --- sequencing and anchoring ------------------------------------------------------------

pytestmark = pytest.mark.django_db


def test_every_entry_gets_one_gap_free_position_and_the_anchor_names_the_chain_heads():
    first = finished_run("first")
    second = finished_run("second")
    anchor = anchors.anchor_audit()

    ledger = list(AuditLedger.objects.order_by("position").values_list("position", "entry_id"))
    assert [position for position, _ in ledger] == list(range(1, AuditEntry.objects.count() + 1))
    assert sorted(entry for _, entry in ledger) == sorted(
        AuditEntry.objects.values_list("pk", flat=True)
    )
    assert anchor is not None
    assert (anchor["number"], anchor["position"], anchor["previous"]) == (1, len(ledger), "")
    assert anchor["head"] == AuditLedger.objects.get(position=len(ledger)).link
    heads = {head["chain"]: (head["seq"], head["hash"]) for head in anchor["chains"]}
    assert heads[f"run {first.pk}"] == (first.audit_seq, first.audit_head)
    assert heads[f"run {second.pk}"] == (second.audit_seq, second.audit_head)
    pipelines = {first.pipeline_version.pipeline_id, second.pipeline_version.pipeline_id}
    assert {f"pipeline {pk}" for pk in pipelines} <= set(heads)
    assert "audit trail intact" in verify_anchors()

    # Nothing new: no anchor. A new entry: an anchor naming only the chain that moved.
    assert anchors.anchor_audit() is None
    services.run_cancel(run_id=services.run_start(pipeline="first", inputs={}).pk)
    later = anchors.anchor_audit()
    assert later is not None
    assert later["number"] == 2
    assert later["previous"] == anchor["signature"]
    assert [head["chain"] for head in later["chains"]] == [f"run {Run.objects.latest('pk').pk}"]
    assert [line["number"] for line in anchor_lines()] == [1, 2]
    assert "audit trail intact" in verify_anchors()


def test_both_stores_receive_the_anchor_also_a_postgresql_one(settings):
    db = connection.settings_dict
    name = f"{db['NAME']}_anchor_store"
    server = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}"
    admin = psycopg.connect(f"{server}/postgres", autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        settings.FIREFLY_ANCHOR_DATABASE_URL = f"{server}/{name}"
        anchored_run()
        with psycopg.connect(settings.FIREFLY_ANCHOR_DATABASE_URL) as store:
            rows = store.execute("SELECT number, line FROM firefly_audit_anchor").fetchall()
        assert [(number, json.loads(line)) for number, line in rows] == [(1, anchor_lines()[0])]
        assert "audit trail intact" in verify_anchors()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_the_sqlite_store_holds_the_same_lines_as_the_file(anchor_stores):
    anchored_run()
    services.run_cancel(run_id=services.run_start(pipeline="chain", inputs={}).pk)
    anchors.anchor_audit()
    db = sqlite3.connect(anchor_stores / "anchors.sqlite3")
    try:
        lines = [line for (line,) in db.execute("SELECT line FROM firefly_audit_anchor")]
    finally:
        db.close()
    assert lines == anchor_file().read_text().splitlines()
    assert len(lines) == 2


def test_a_failing_store_is_logged_and_its_anchor_written_again_at_the_next_beat(
    settings, anchor_stores, caplog
):
    finished_run()
    settings.FIREFLY_ANCHOR_DATABASE_URL = "postgres://postgres@127.0.0.1:1/nowhere"
    with caplog.at_level(logging.ERROR, logger="pipelines.tasks"):
        tasks.anchor_audit()  # as beat runs it: logged, not raised
    assert "audit anchor not written" in caplog.text
    state = LedgerState.objects.get()
    assert state.anchor_number == 0
    assert state.pending_anchor  # signed and kept, waiting for its stores
    assert len(anchor_lines()) == 1  # the file took it

    settings.FIREFLY_ANCHOR_DATABASE_URL = f"sqlite:///{anchor_stores / 'anchors.sqlite3'}"
    tasks.anchor_audit()
    assert LedgerState.objects.get().anchor_number == 1
    assert [line["number"] for line in anchor_lines()] == [1]  # not written twice
    assert json.dumps(anchor_lines()[0], sort_keys=True, separators=(",", ":")) == (
        state.pending_anchor
    )
    assert "audit trail intact" in verify_anchors()


def test_after_a_key_rotation_anchors_and_positions_use_the_new_key_and_old_ones_verify():
    anchored_run()
    rotated = ["k2026:" + "n" * 48]
    with override_settings(FIREFLY_AUDIT_KEYS=rotated):
        services.run_cancel(run_id=services.run_start(pipeline="chain", inputs={}).pk)
        later = anchors.anchor_audit()
        assert later is not None
        assert later["key_id"] == "k2026"
        assert [line["key_id"] for line in anchor_lines()] == ["default", "k2026"]
        newest = AuditLedger.objects.order_by("-position").first()
        assert newest is not None
        assert newest.key_id == "k2026"
        assert "audit trail intact" in verify_anchors()
    # Without the new key its entries and anchor cannot be checked: each names the key.
    with pytest.raises(CommandError, match=r"unknown key: signed with key 'k2026'"):
        verify_anchors()
    problem, _ = anchor_checks.verify()
    assert re.search(
        r"line 2: forged: anchor 2 is signed with unknown key id 'k2026'", str(problem)
    )


def test_the_beat_schedule_runs_the_anchoring():
    entry = settings.CELERY_BEAT_SCHEDULE["firefly-audit-anchor"]
    assert entry["task"] == tasks.anchor_audit.name == "pipelines.tasks.anchor_audit"
    assert entry["schedule"] == settings.FIREFLY_ANCHOR_INTERVAL_S


def test_the_anchor_file_and_its_folder_are_created_readable_by_owner_and_group(anchor_stores):
    assert not (anchor_stores / "worm").exists()
    anchored_run()
    assert anchor_file().exists()
    assert oct(anchor_file().stat().st_mode & 0o777) == oct(0o640)


# --- the attacks -------------------------------------------------------------------------


def test_an_edited_entry_is_named():
    run = anchored_run()
    tamper(
        f'UPDATE {ENTRIES} SET outputs = \'{{"deployed": "evil"}}\' '
        f"WHERE run_id = {run.pk} AND seq = 3"
    )
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 3 .*: edited"):
        verify_anchors()


def test_a_deleted_entry_is_named():
    run = anchored_run()
    tamper(f"DELETE FROM {ENTRIES} WHERE run_id = {run.pk} AND seq = 3")
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 4 .*: deleted"):
        verify_anchors()


def test_an_inserted_entry_is_named():
    run = anchored_run()
    third = AuditEntry.objects.get(run=run, seq=3)
    columns = [f.column or "" for f in AuditEntry._meta.concrete_fields]
    copied = ", ".join(c for c in columns if c not in ("id", "seq"))
    tamper(
        f"UPDATE {ENTRIES} SET seq = seq + 100 WHERE run_id = {run.pk} AND seq >= 3",
        f"UPDATE {ENTRIES} SET seq = seq - 99 WHERE run_id = {run.pk} AND seq >= 103",
        f"INSERT INTO {ENTRIES} (seq, {copied}) SELECT 3, {copied} FROM {ENTRIES} "
        f"WHERE id = {third.pk}",
        f"UPDATE {ENTRIES} SET outputs = '{{\"approved\": true}}', hash = repeat('f', 64) "
        f"WHERE run_id = {run.pk} AND seq = 3",
    )
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 3 .*: inserted"):
        verify_anchors()


def test_reordered_entries_are_named():
    run = anchored_run()
    where = f"WHERE run_id = {run.pk} AND"
    tamper(
        f"UPDATE {ENTRIES} SET seq = 1000 {where} seq = 3",
        f"UPDATE {ENTRIES} SET seq = 3 {where} seq = 4",
        f"UPDATE {ENTRIES} SET seq = 4 {where} seq = 1000",
    )
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 3 .*: reordered"):
        verify_anchors()


def test_a_truncated_tail_with_a_rewound_head_is_named():
    run = anchored_run()
    *kept, last = entries_of(run)
    tamper(f"DELETE FROM {ENTRIES} WHERE id = {last.pk}")
    Run.objects.filter(pk=run.pk).update(audit_seq=kept[-1].seq, audit_head=kept[-1].hash)
    # The chain alone is consistent again: only the global sequence knows.
    assert "audit trail intact" in call_verify("--run", str(run.pk))
    with pytest.raises(
        CommandError, match=rf"run {run.pk} seq {last.seq} \(entry {last.pk}\): deleted: it holds"
    ):
        verify_anchors()


def test_a_truncated_tail_with_the_ledger_and_its_state_rewound_is_named():
    run = anchored_run()
    *kept, last = entries_of(run)
    position = AuditLedger.objects.get(entry_id=last.pk).position
    top = AuditLedger.objects.order_by("-position").first()
    tamper(
        f"DELETE FROM {ENTRIES} WHERE id = {last.pk}",
        f"DELETE FROM {LEDGER} WHERE position >= {position}",
    )
    Run.objects.filter(pk=run.pk).update(audit_seq=kept[-1].seq, audit_head=kept[-1].hash)
    LedgerState.objects.update(position=position - 1, anchor_position=position - 1)
    with pytest.raises(
        CommandError,
        match=rf"global sequence: deleted: the ledger ends at position {position - 1}, "
        rf"anchor 1 covers {top.position}",
    ):
        verify_anchors()


def test_a_whole_deleted_run_is_named():
    kept = finished_run("kept")
    gone = finished_run("gone")
    anchors.anchor_audit()
    tamper(
        *deleting(gone),
    )
    assert "audit trail intact" in call_verify()  # every chain left is whole
    with pytest.raises(CommandError, match=rf"run {gone.pk} seq 1 .*: deleted"):
        verify_anchors()
    assert Run.objects.filter(pk=kept.pk).exists()


def test_a_whole_deleted_run_with_its_positions_is_named():
    gone = finished_run("gone")
    finished_run("kept")  # after it in the ledger
    anchors.anchor_audit()
    first = AuditLedger.objects.filter(run_id=gone.pk).order_by("position").first()
    tamper(
        f"DELETE FROM {LEDGER} WHERE run_id = {gone.pk}",
        *deleting(gone),
    )
    with pytest.raises(
        CommandError,
        match=rf"global sequence: deleted: position {first.position} is missing from the ledger",
    ):
        verify_anchors()


def test_a_ledger_relinked_with_another_key_is_named():
    """A run deleted, the ledger closed over its gap and every later link recomputed, with
    a key of the attacker's own (and the state and the anchor file left alone)."""
    gone = finished_run("gone")
    finished_run("kept")  # after it in the ledger
    anchors.anchor_audit()
    first = AuditLedger.objects.filter(run_id=gone.pk).order_by("position").first()
    assert first is not None
    count = AuditLedger.objects.filter(run_id=gone.pk).count()
    tamper(
        f"DELETE FROM {LEDGER} WHERE run_id = {gone.pk}",
        f"UPDATE {LEDGER} SET position = position - {count} WHERE position > {first.position}",
        *deleting(gone),
    )
    previous = AuditLedger.objects.get(position=first.position - 1).link
    relinked = []
    for row in AuditLedger.objects.filter(position__gte=first.position).order_by("position"):
        payload = anchors.link_payload(
            row.position,
            row.entry_id,
            row.run_id,
            row.pipeline_id,
            row.seq,
            row.entry_hash,
            row.key_id,
            previous,
        )
        previous = hmac.new(ATTACKER_KEY, payload, hashlib.sha256).hexdigest()
        relinked.append(f"UPDATE {LEDGER} SET link = '{previous}' WHERE position = {row.position}")
    tamper(*relinked)
    with pytest.raises(
        CommandError, match=rf"global sequence: edited: position {first.position}'s link"
    ):
        verify_anchors()


def test_an_entry_forged_with_another_key_is_named():
    run = anchored_run()
    last = entries_of(run)[-1]
    forged = AuditEntry.objects.get(pk=last.pk)
    forged.pk, forged.seq, forged.prev_hash = None, last.seq + 1, last.hash
    forged.event = "run.approved"
    forged.hash = hmac.new(ATTACKER_KEY, canonical(forged), hashlib.sha256).hexdigest()
    forged._state.adding = True
    forged.save()
    Run.objects.filter(pk=run.pk).update(audit_seq=forged.seq, audit_head=forged.hash)
    anchors.anchor_audit()  # sequenced like any entry: the chain check names it
    with pytest.raises(CommandError, match=rf"run {run.pk} seq {forged.seq} .*: edited"):
        verify_anchors()


def test_an_anchor_signed_with_another_key_is_named():
    anchored_run()
    record = anchor_lines()[0]
    payload = anchors.anchor_payload(record)
    record["signature"] = hmac.new(ATTACKER_KEY, payload, hashlib.sha256).hexdigest()
    anchor_file().write_text(anchors.anchor_line(record) + "\n")
    with pytest.raises(
        CommandError, match=r"anchor file .* line 1: edited: anchor 1's signature does not match"
    ):
        verify_anchors()


def test_an_anchor_with_an_unknown_key_id_is_named():
    anchored_run()
    record = anchor_lines()[0]
    record["key_id"] = "k-attacker"
    anchor_file().write_text(anchors.anchor_line(record) + "\n")
    with pytest.raises(CommandError, match=r"forged: anchor 1 is signed with unknown key id"):
        verify_anchors()


def test_an_edited_anchor_line_is_named():
    run = anchored_run()
    *kept, last = entries_of(run)
    tamper(f"DELETE FROM {ENTRIES} WHERE id = {last.pk}")
    Run.objects.filter(pk=run.pk).update(audit_seq=kept[-1].seq, audit_head=kept[-1].hash)
    record = anchor_lines()[0]
    for head in record["chains"]:  # the attacker rewinds the anchored head as well
        if head["chain"] == f"run {run.pk}":
            head["seq"], head["hash"] = kept[-1].seq, kept[-1].hash
    anchor_file().write_text(anchors.anchor_line(record) + "\n")
    with pytest.raises(CommandError, match=r"line 1: edited: anchor 1's signature"):
        verify_anchors()


def test_a_deleted_anchor_file_is_named():
    anchored_run()
    anchor_file().unlink()
    with pytest.raises(
        CommandError, match=r"anchor file .*: deleted: it is missing; 1 anchors were written"
    ):
        verify_anchors()


def test_a_truncated_anchor_file_is_named():
    run = anchored_run()
    services.run_cancel(run_id=services.run_start(pipeline="chain", inputs={}).pk)
    anchors.anchor_audit()
    lines = anchor_file().read_text().splitlines()
    anchor_file().write_text(lines[0] + "\n")
    with pytest.raises(
        CommandError, match=r"anchor file .*: deleted: it ends at anchor 1, but 2 were written"
    ):
        verify_anchors()
    # Rewinding the application database's count as well: the other store still holds 2.
    LedgerState.objects.update(anchor_number=1)
    with pytest.raises(CommandError, match=r"it ends at anchor 1; anchor database .* holds 2"):
        verify_anchors()
    assert run.pk


def test_a_removed_anchor_line_in_the_middle_is_named():
    anchored_run()
    for _ in range(2):
        services.run_cancel(run_id=services.run_start(pipeline="chain", inputs={}).pk)
        anchors.anchor_audit()
    first, _, third = anchor_file().read_text().splitlines()
    anchor_file().write_text(f"{first}\n{third}\n")
    with pytest.raises(CommandError, match=r"line 2: deleted: anchor 2 is missing"):
        verify_anchors()


def test_the_ledger_refuses_raw_update_and_delete():
    anchored_run()
    for sql in (f"UPDATE {LEDGER} SET seq = 99", f"DELETE FROM {LEDGER}"):
        with (
            transaction.atomic(),
            connection.cursor() as cursor,
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
        ):
            cursor.execute(sql)
    assert AuditLedger.objects.filter(seq=99).count() == 0
    assert AuditLedger.objects.count() == AuditEntry.objects.count()


@pytest.fixture
def app_role() -> Iterator[str]:
    """The app's least-privileged login role (`manage.py database_roles`)."""
    role = role_name()
    call_command("database_roles", "--apply", "--role", role, "--password", PASSWORD)
    yield role
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {role}")
        cursor.execute(f"DROP ROLE {role}")


@pytest.mark.django_db(transaction=True)
def test_as_the_least_privileged_role_the_ledger_is_append_only_and_anchoring_works(
    app_role, anchor_stores
):
    anchored_run()
    before = list(AuditLedger.objects.values_list("position", "link"))
    with connect_as(app_role) as session:
        for statement in (
            f"UPDATE {LEDGER} SET seq = 99",
            f"DELETE FROM {LEDGER}",
            f"TRUNCATE {LEDGER}",
            f"ALTER TABLE {LEDGER} DISABLE TRIGGER auditledger_append_only",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                session.execute(statement)
    assert list(AuditLedger.objects.values_list("position", "link")) == before

    # The beat's work, done by a process logged in as the role.
    services.run_cancel(run_id=services.run_start(pipeline="chain", inputs={}).pk)
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{app_role}:{PASSWORD}@{db['HOST']}:{db['PORT'] or 5432}"
        f"/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings",
        "FIREFLY_ANCHOR_FILE": settings.FIREFLY_ANCHOR_FILE,
        "FIREFLY_ANCHOR_DATABASE_URL": settings.FIREFLY_ANCHOR_DATABASE_URL,
    }
    done = manage(env, "anchor_audit")
    assert done.returncode == 0, done.stderr
    assert "anchor 2" in done.stdout
    assert AuditLedger.objects.count() == AuditEntry.objects.count()
    verified = manage(env, "verify_audit", "--anchors")
    assert verified.returncode == 0, verified.stderr
    assert "audit trail intact" in verified.stdout


@pytest.mark.django_db(transaction=True)
def test_with_jobs_the_global_sequence_is_checked_beside_the_chains():
    finished_run("kept")
    gone = finished_run("gone")
    anchors.anchor_audit()
    out = io.StringIO()
    call_command("verify_audit", "--anchors", "--jobs", "2", stdout=out)
    assert "audit trail intact" in out.getvalue()
    assert f"checked {AuditLedger.objects.count()} positions" in out.getvalue()
    tamper(*deleting(gone))
    with pytest.raises(CommandError, match=rf"run {gone.pk} seq 1 .*: deleted: it holds"):
        call_command("verify_audit", "--anchors", "--jobs", "2", stdout=io.StringIO())


def test_a_session_acting_for_an_organization_sees_nothing_of_the_ledger():
    run = anchored_run()
    assert AuditLedger.objects.exists()
    assert LedgerState.objects.exists()
    with rls.scoped(run.organization_id):
        assert not AuditLedger.objects.exists()
        assert not LedgerState.objects.exists()
        assert AuditEntry.objects.filter(run=run).exists()  # its own entries it sees


# --- export ------------------------------------------------------------------------------


def test_the_export_carries_the_anchors_and_verify_against_checks_them(tmp_path):
    run = anchored_run()
    export = tmp_path / "run.jsonl"
    call_command(
        "export_audit", "--run", str(run.pk), "--output", str(export), stderr=io.StringIO()
    )
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line.get("type") for line in lines[-1:]] == ["anchor"]
    assert len(lines) == run.audit_seq + 1
    assert "audit trail intact" in call_verify("--against", str(export))

    # The run's tail cut and its head rewound: the exported anchor names the missing entry.
    *kept, last = entries_of(run)
    entries_only = tmp_path / "anchors-only.jsonl"
    entries_only.write_text(export.read_text().splitlines()[-1] + "\n")
    tamper(f"DELETE FROM {ENTRIES} WHERE id = {last.pk}")
    Run.objects.filter(pk=run.pk).update(audit_seq=kept[-1].seq, audit_head=kept[-1].hash)
    with pytest.raises(CommandError, match=rf"run {run.pk} seq {last.seq} .*: deleted: anchored"):
        call_verify("--against", str(entries_only))

    # An organization's export carries no anchor: anchors name every organization's chains.
    own = tmp_path / "organization.jsonl"
    call_command(
        "export_audit",
        "--since",
        "2000-01-01",
        "--organization",
        run.organization.slug,
        "--output",
        str(own),
        stderr=io.StringIO(),
    )
    assert all("type" not in json.loads(line) for line in own.read_text().splitlines())

    record = lines[-1]
    record["position"] += 1
    entries_only.write_text(anchors.anchor_line(record) + "\n")
    with pytest.raises(CommandError, match="edited: anchor 1's signature does not match"):
        call_verify("--against", str(entries_only))


def call_verify(*args: str) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


# --- late commits ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_entry_committed_late_with_a_lower_id_is_never_skipped():
    """Two real connections: a run's transaction takes its entry ids, then waits; another
    commits entries with higher ids, which are sequenced; the sequencer runs while the
    first is still open, and once it commits its entries get the next positions."""
    for name in ("slow", "fast"):
        services.pipeline_create(member_role="starter", spec={"name": name, "steps": STEPS})
    inserted, release = threading.Event(), threading.Event()
    slow: list[Run] = []
    failure: list[BaseException] = []

    def open_transaction() -> None:
        try:
            with transaction.atomic():
                slow.append(services.run_start(pipeline="slow", inputs={}))
                inserted.set()
                assert release.wait(30)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
            inserted.set()
        finally:
            connection.close()

    thread = threading.Thread(target=open_transaction)
    thread.start()
    try:
        assert inserted.wait(30)
        fast = services.run_start(pipeline="fast", inputs={})
        for _ in range(3):  # several runs: none may move its floor past the open one
            anchors.sequence()
    finally:
        release.set()
        thread.join(30)
    assert not failure
    late = list(AuditEntry.objects.filter(run=slow[0]).values_list("pk", flat=True))
    early = list(AuditEntry.objects.filter(run=fast).values_list("pk", flat=True))
    assert late
    assert early
    assert max(late) < min(early)
    assert not AuditLedger.objects.filter(entry_id__in=late).exists()

    anchors.anchor_audit()
    positions = dict(AuditLedger.objects.values_list("entry_id", "position"))
    assert min(positions[e] for e in late) > max(positions[e] for e in early)
    assert sorted(positions) == sorted(AuditEntry.objects.values_list("pk", flat=True))
    assert sorted(positions.values()) == list(range(1, len(positions) + 1))
    assert "audit trail intact" in verify_anchors()


@pytest.mark.django_db(transaction=True)
def test_the_floor_rises_once_every_older_transaction_has_ended():
    finished_run()
    highest = AuditEntry.objects.order_by("-pk").values_list("pk", flat=True)[0]
    anchors.sequence()
    assert LedgerState.objects.get().floor == 0  # transactions begun before may still commit
    # Once they have all ended, it rises.
    deadline = time.monotonic() + 30
    while LedgerState.objects.get().floor < highest and time.monotonic() < deadline:
        time.sleep(0.2)
        anchors.sequence()
    state = LedgerState.objects.get()
    assert state.floor == highest
    assert state.position == AuditEntry.objects.count()

    # Transactions of other databases on the server do not hold it back.
    other = connection.settings_dict["NAME"] + "_other"
    server = psycopg.connect(
        f"postgres://{connection.settings_dict['USER']}@{connection.settings_dict['HOST']}:"
        f"{connection.settings_dict['PORT'] or 5432}/postgres",
        autocommit=True,
    )
    server.execute(f'DROP DATABASE IF EXISTS "{other}"')
    server.execute(f'CREATE DATABASE "{other}"')
    try:
        with psycopg.connect(server.info.dsn.replace("dbname=postgres", f"dbname={other}")) as db:
            db.execute("CREATE TABLE t (x int)")
            db.execute("INSERT INTO t VALUES (1)")  # a transaction id, held open
            services.run_cancel(run_id=services.run_start(pipeline="chain", inputs={}).pk)
            newest = AuditEntry.objects.order_by("-pk").values_list("pk", flat=True)[0]
            deadline = time.monotonic() + 30
            while LedgerState.objects.get().floor < newest and time.monotonic() < deadline:
                anchors.sequence()
                time.sleep(0.2)
            db.rollback()
    finally:
        server.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
        server.close()
    assert LedgerState.objects.get().floor == newest


# --- SQLite ------------------------------------------------------------------------------


@pytest.fixture
def sqlite_site(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'firefly.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings",
        "FIREFLY_ANCHOR_FILE": str(tmp_path / "anchors.jsonl"),
        "FIREFLY_ANCHOR_DATABASE_URL": f"sqlite:///{tmp_path / 'anchors.sqlite3'}",
        # Messages die with the process: no worker of the suite's may take them.
        "CELERY_BROKER_URL": "memory://",
    }
    migrated = manage(env, "migrate", "--noinput", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.django_db(transaction=False)
def test_on_sqlite_entries_are_sequenced_anchored_verified_and_the_ledger_append_only(
    sqlite_site, tmp_path
):
    script = (
        "from pipelines import services; "
        "services.pipeline_create(member_role='starter', spec={'name': 'lite', 'steps': "
        "[{'name': 'a', 'type': 'noop'}]}); "
        "run = services.run_start(pipeline='lite', inputs={}); "
        "services.run_cancel(run_id=run.pk)"
    )
    started = manage(sqlite_site, "shell", "-c", script)
    assert started.returncode == 0, started.stderr
    anchored = manage(sqlite_site, "anchor_audit")
    assert anchored.returncode == 0, anchored.stderr
    assert "anchor 1" in anchored.stdout
    verified = manage(sqlite_site, "verify_audit", "--anchors")
    assert verified.returncode == 0, verified.stderr
    assert "audit trail intact" in verified.stdout

    db = sqlite3.connect(tmp_path / "firefly.sqlite3")
    try:
        for sql in (f"UPDATE {LEDGER} SET seq = 99", f"DELETE FROM {LEDGER}"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)
            db.rollback()
        positions = db.execute(f"SELECT count(*), max(position) FROM {LEDGER}").fetchone()
        assert positions == db.execute(f"SELECT count(*), count(*) FROM {ENTRIES}").fetchone()
        assert positions[0] >= 3

        # Deleting a whole run (the triggers dropped, as anyone holding the file can).
        db.execute(f"DROP TRIGGER {ENTRIES}_no_delete")
        db.execute(f"DELETE FROM {ENTRIES} WHERE run_id IS NOT NULL")
        db.execute("DELETE FROM pipelines_steprun")
        db.execute(f"DELETE FROM {RUNS}")
        db.commit()
    finally:
        db.close()
    broken = manage(sqlite_site, "verify_audit", "--anchors")
    assert broken.returncode == 1
    assert "run 1 seq 1" in broken.stderr
    assert "deleted: it holds position" in broken.stderr


@pytest.mark.parametrize(
    ("anchor_file", "anchor_database", "refusal"),
    [
        ("", "", "Set FIREFLY_ANCHOR_FILE or FIREFLY_ANCHOR_DATABASE_URL"),
        ("", "{app}", "FIREFLY_ANCHOR_DATABASE_URL names the application's own database"),
    ],
)
def test_settings_refuse_anchoring_to_no_store_or_to_the_database_itself(
    anchor_file, anchor_database, refusal
):
    app = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/firefly")
    env = {
        **os.environ,
        "DATABASE_URL": app,
        "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings",
        "FIREFLY_ANCHOR_FILE": anchor_file,
        "FIREFLY_ANCHOR_DATABASE_URL": anchor_database.format(app=app),
    }
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert refusal in done.stderr


def test_a_run_purged_by_retention_after_its_anchor_verifies_and_one_deleted_besides_is_named(
    settings, tmp_path
):
    """Retention deletes a run's row on purpose and records its head: the anchors accept
    that, not a run deleted the same way without the record."""
    settings.FIREFLY_RETENTION_OUTPUTS_DAYS = 1
    settings.FIREFLY_RETENTION_RUNS_DAYS = 2
    settings.FIREFLY_RETENTION_IDLE_SHARE = 0
    settings.FIREFLY_RETENTION_PAUSE_S = 0
    settings.FIREFLY_RETENTION_ARCHIVE_DIR = str(tmp_path / "archive")
    purged = finished_run("purged")
    Run.objects.filter(pk=purged.pk).update(finished_at=purged.finished_at - timedelta(days=10))
    anchors.anchor_audit()
    tasks.apply_retention()
    assert not Run.objects.filter(pk=purged.pk).exists()
    anchors.anchor_audit()
    assert "audit trail intact" in verify_anchors()
    # Its archive segment ends with the newest anchor, and checks against the database.
    [segment] = (tmp_path / "archive").glob("*.jsonl")
    last = json.loads(segment.read_text().splitlines()[-1])
    assert last["type"] == "anchor"
    assert last["number"] == 1
    out = io.StringIO()
    call_command("verify_audit", "--against", str(segment), stdout=out)
    assert "audit trail intact" in out.getvalue()

    gone = finished_run("gone")
    anchors.anchor_audit()
    tamper(*deleting(gone)[1:])  # its row, steps and checkpoints; its entries stay
    with pytest.raises(CommandError, match=rf"run {gone.pk}.*: deleted: its run's row is gone"):
        verify_anchors()
