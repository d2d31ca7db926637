"""Audit keys by id: new entries name the key that signed them, rotation keeps old entries
verifying, and a forged or unknown key is named by verification."""

from __future__ import annotations

import hashlib
import hmac
import io

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import override_settings

from pipelines import keys
from pipelines.canonical import CONTENT_BY_DIGEST, canonical, content_digest
from pipelines.models import AuditEntry
from tests.pipelines.test_audit import TABLE, finished_run, tamper, verify

pytestmark = pytest.mark.django_db

NEW_KEY = "k2026:" + "n" * 48
OTHER_KEY = "k2025:" + "o" * 48


def test_new_entries_are_scheme_3_signed_by_the_current_key():
    run = finished_run()
    entries = list(AuditEntry.objects.filter(run=run).order_by("seq"))
    assert {e.hash_scheme for e in entries} == {CONTENT_BY_DIGEST}
    assert {e.key_id for e in entries} == {"default"}
    assert all(e.content_hash == content_digest(e) for e in entries)
    # The HMAC covers the content's digest, not the content.
    assert b'"outputs"' not in canonical(entries[-1])
    assert content_digest(entries[-1]).encode() in canonical(entries[-1])


def test_rotation_signs_new_entries_with_the_new_key_and_old_ones_still_verify():
    before = finished_run("before")
    out = io.StringIO()
    call_command("rotate_audit_key", "--id", "k2026", stdout=out, stderr=io.StringIO())
    value = out.getvalue().strip().removeprefix("FIREFLY_AUDIT_KEYS=")
    key_id, _, secret = value.partition(":")
    assert key_id == "k2026"
    assert len(secret) >= 32

    with override_settings(FIREFLY_AUDIT_KEYS=value.split(",")):
        assert keys.current_id() == "k2026"
        after = finished_run("after")
        assert set(AuditEntry.objects.filter(run=after).values_list("key_id", flat=True)) == {
            "k2026"
        }
        assert set(AuditEntry.objects.filter(run=before).values_list("key_id", flat=True)) == {
            "default"
        }
        assert "audit trail intact" in verify()

    # Without the new key, its entries cannot be checked, and verification says which key.
    with pytest.raises(CommandError, match=rf"run {after.pk} seq 1 .*: unknown key: .*'k2026'"):
        verify("--run", str(after.pk))


def test_a_second_rotation_keeps_every_earlier_key():
    with override_settings(FIREFLY_AUDIT_KEYS=[OTHER_KEY]):
        out = io.StringIO()
        call_command("rotate_audit_key", stdout=out, stderr=io.StringIO())
    listed = out.getvalue().strip().removeprefix("FIREFLY_AUDIT_KEYS=").split(",")
    assert len(listed) == 2
    assert listed[1] == OTHER_KEY
    with override_settings(FIREFLY_AUDIT_KEYS=listed):
        assert keys.current_id() == listed[0].partition(":")[0]
        assert keys.get("k2025") == b"o" * 48


def test_rotate_refuses_a_taken_or_malformed_id():
    with pytest.raises(CommandError, match="not one already configured"):
        call_command("rotate_audit_key", "--id", "default", stdout=io.StringIO())
    with pytest.raises(CommandError, match="1-32 letters"):
        call_command("rotate_audit_key", "--id", "bad id!", stdout=io.StringIO())


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        (["nokey"], "has no key"),
        (["default:" + "x" * 40], "not 'default'"),
        (["a:" + "x" * 40, "a:" + "y" * 40], "listed twice"),
    ],
)
def test_a_malformed_key_list_is_refused_by_name(listed, message):
    with (
        override_settings(FIREFLY_AUDIT_KEYS=listed),
        pytest.raises(ImproperlyConfigured, match=message),
    ):
        keys.current()


def test_an_entry_forged_with_another_key_reads_as_edited():
    """An attacker without the key rewrites an entry and signs it with a key of their own."""
    run = finished_run()
    entry = AuditEntry.objects.get(run=run, seq=3)
    entry.outputs = {"deployed": "evil"}
    entry.content_hash = content_digest(entry)
    forged = hmac.new(b"attacker-key", canonical(entry), hashlib.sha256).hexdigest()
    tamper(
        f'UPDATE {TABLE} SET outputs = \'{{"deployed": "evil"}}\', '
        f"content_hash = '{entry.content_hash}', hash = '{forged}' WHERE id = {entry.pk}"
    )
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 3 .*: edited"):
        verify("--run", str(run.pk))


def test_content_changed_under_an_intact_header_reads_as_edited():
    run = finished_run()
    tamper(
        f"UPDATE {TABLE} SET error_message = 'nothing happened' WHERE run_id = {run.pk} AND seq = 2"
    )
    with pytest.raises(CommandError, match=rf"run {run.pk} seq 2 .*: edited: its content"):
        verify("--run", str(run.pk))


def test_claiming_another_key_id_reads_as_edited():
    """The key id is inside the hashed JSON: relabelling an entry breaks it."""
    run = finished_run()
    with override_settings(FIREFLY_AUDIT_KEYS=[OTHER_KEY]):
        tamper(f"UPDATE {TABLE} SET key_id = 'k2025' WHERE run_id = {run.pk} AND seq = 2")
        with pytest.raises(CommandError, match=rf"run {run.pk} seq 2 .*: edited"):
            verify("--run", str(run.pk))
