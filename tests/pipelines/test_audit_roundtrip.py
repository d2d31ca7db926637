"""The audit chain verifies what the database gives back, not what Python sent."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import audit, services
from pipelines.audit import entry_hash
from pipelines.canonical import (
    CONTENT_BY_DIGEST,
    CURRENT_SCHEME,
    VALUES_AS_GIVEN,
    canonical,
    numbers,
)
from pipelines.errors import InvalidInput
from pipelines.models import AuditEntry, Run
from tests.approvals.conftest import drive
from tests.conftest import wait_finished
from tests.pipelines.test_audit import tamper

pytestmark = pytest.mark.django_db

ECHO = {"callable": "tests.pipelines.callables.echo"}
# `b` echoes what it read from `a`: values go through inputs, an output, and back in.
STEPS = [
    {"name": "a", "type": "python", "config": ECHO},
    {"name": "b", "type": "python", "after": ["a"], "config": ECHO},
]

# Numbers jsonb gives back otherwise: 1e16 as 10000000000000000, -0.0 as 0.0, 1.5e300
# as a 301-digit integer, 1e-7 as 0.0000001 (the same float again).
AWKWARD = {"big": 1e16, "negative_zero": -0.0, "huge": 1.5e300, "tiny": 1e-7, "whole": 5.0}


def verify(*args: str) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def export_then_verify(run: Run, path: Path) -> str:
    call_command("export_audit", "--run", str(run.pk), "--output", str(path), stderr=io.StringIO())
    return verify("--run", str(run.pk), "--against", str(path))


def test_an_untouched_run_with_numbers_jsonb_rewrites_verifies_intact(make_pipeline, tmp_path):
    name = make_pipeline(STEPS)
    run = drive(services.run_start(pipeline=name, inputs=AWKWARD))

    assert run.status == Run.Status.SUCCEEDED
    visit = AuditEntry.objects.get(run=run, event="step.succeeded", step_name="a")
    assert visit.outputs["inputs"]["big"] == 10**16  # the database's own form, not 1e16
    assert visit.hash_scheme == CONTENT_BY_DIGEST == CURRENT_SCHEME
    assert AuditEntry._meta.get_field("hash_scheme").default == CURRENT_SCHEME
    assert "audit trail intact" in verify("--run", str(run.pk))
    assert "audit trail intact" in export_then_verify(run, tmp_path / "audit.jsonl")


def test_an_export_line_is_the_hashed_json_a_consumer_can_check(make_pipeline, tmp_path):
    name = make_pipeline(STEPS)
    run = drive(services.run_start(pipeline=name, inputs=AWKWARD))
    path = tmp_path / "audit.jsonl"
    call_command("export_audit", "--run", str(run.pk), "--output", str(path), stderr=io.StringIO())

    key = settings_key()
    for line in path.read_text().splitlines():
        values = json.loads(line)
        assert values["hash_scheme"] == CONTENT_BY_DIGEST
        assert consumer_check(values, key)


def consumer_check(line: dict, key: bytes) -> bool:
    """What docs/audit.md tells a consumer to do with a scheme 3 line, without Firefly."""
    content = {k: line[k] for k in ("inputs", "outputs", "data", "error_message", "pause_reason")}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    if not line.get("redacted") and digest.hexdigest() != line["content_sha256"]:
        return False
    skip = {*content, "seq", "hash", "id", "redacted"}
    hashed = {k: v for k, v in line.items() if k not in skip}
    body = json.dumps(hashed, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest() == line["hash"]


def settings_key() -> bytes:
    from django.conf import settings as django_settings

    return django_settings.FIREFLY_AUDIT_KEY.encode()


# --- entries written before hash schemes ------------------------------------------------


def test_scheme_1_hashes_exactly_as_entries_were_hashed_before_schemes():
    """A fixed entry and the HMAC the code before scheme 2 gave it (key "golden-key")."""
    entry = SimpleNamespace(
        run_id=7,
        pipeline_id=3,
        step_name="a",
        event="step.succeeded",
        actor_id=None,
        actor_name="system",
        status="succeeded",
        inputs={"big": 1e16, "z": -0.0, "s": "\U0001f600"},
        outputs={"n": [1, 2.5, 1.5e300]},
        latency_ms=12,
        started_at=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        completed_at=datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC),
        error_message="",
        pause_reason="",
        data=None,
        created_at=datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC),
        prev_hash="ab" * 32,
        hash_scheme=VALUES_AS_GIVEN,
    )
    digest = hmac.new(b"golden-key", canonical(entry), hashlib.sha256).hexdigest()  # type: ignore[arg-type]
    assert digest == "dca51ab64321451ad78f95289d210ac7207a0cfcda1d8b86747103bd11bb7a29"


def test_a_chain_begun_before_schemes_and_continued_after_verifies(make_pipeline, monkeypatch):
    pause = {"callable": "tests.pipelines.callables.pause"}
    name = make_pipeline([{"name": "p", "type": "python", "config": pause}])
    monkeypatch.setattr(audit, "CURRENT_SCHEME", VALUES_AS_GIVEN)  # as the old code wrote
    # Numbers jsonb keeps as they are: scheme 1 verifies them (it never could the others).
    run = drive(services.run_start(pipeline=name, inputs={"n": 1, "x": 0.5, "s": "\u00e9"}))
    monkeypatch.undo()
    services.run_cancel(run_id=run.pk)

    schemes = list(AuditEntry.objects.filter(run=run).order_by("seq").values_list("hash_scheme"))
    assert {s for (s,) in schemes} == {VALUES_AS_GIVEN, CONTENT_BY_DIGEST}
    assert "audit trail intact" in verify("--run", str(run.pk))


def test_a_row_inserted_without_the_column_is_scheme_1(make_pipeline):
    """The column's database default marks rows written before it as scheme 1."""
    run = drive(services.run_start(pipeline=make_pipeline(STEPS), inputs={}))
    first = AuditEntry.objects.filter(run=run).order_by("seq").first()
    assert first is not None
    skip = ("id", "hash_scheme", "seq")
    fields = AuditEntry._meta.concrete_fields
    columns = ", ".join(str(f.column) for f in fields if f.name not in skip)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {AuditEntry._meta.db_table} ({columns}, seq) "
            f"SELECT {columns}, 1000 FROM {AuditEntry._meta.db_table} WHERE id = %s "
            "RETURNING hash_scheme",
            [first.pk],
        )
        assert cursor.fetchone() == (VALUES_AS_GIVEN,)


@pytest.mark.parametrize(
    ("scheme", "message"),
    [(VALUES_AS_GIVEN, "no longer matches its hash"), (9, "unknown audit hash scheme 9")],
)
def test_changing_an_entrys_scheme_is_an_edit(make_pipeline, scheme, message):
    run = drive(services.run_start(pipeline=make_pipeline(STEPS), inputs=AWKWARD))
    visit = AuditEntry.objects.get(run=run, event="step.succeeded", step_name="a")
    tamper(f"UPDATE {AuditEntry._meta.db_table} SET hash_scheme = {scheme} WHERE id = {visit.pk}")

    with pytest.raises(CommandError, match=f"seq {visit.seq} .*edited: .*{message}"):
        verify("--run", str(run.pk))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\x00b", "Run inputs key 's' holds a NUL character"),
        ("\ud800", "Run inputs key 's' holds a lone surrogate"),
        (float("nan"), "Run inputs key 's' holds nan, which is not JSON"),
    ],
)
def test_inputs_the_database_cannot_store_are_refused_by_name(make_pipeline, value, message):
    name = make_pipeline(STEPS)
    with pytest.raises(InvalidInput, match=message):
        services.run_start(pipeline=name, inputs={"s": value})
    assert not Run.objects.exists()


# --- generated values ------------------------------------------------------------------

# Strings PostgreSQL can store: no NUL, no lone surrogates (json_problem refuses both).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
# Python reads integers of up to 4,300 digits from JSON; jsonb stores far more.
BIG = 10**4299 - 1
SCALARS = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([-0.0, 1e16, 1.5e300, 5e-324, 2.2250738585072014e-308, sys.float_info.max])
    | st.integers()
    | st.integers(min_value=-BIG, max_value=BIG)
    | st.sampled_from([BIG, -BIG])
    | TEXT
)
TREES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=25,
)


@st.composite
def deep(draw: Any) -> Any:
    """A value nested up to 50 levels: within FIREFLY_JSON_MAX_DEPTH once echoed."""
    value = draw(TREES)
    for _ in range(draw(st.integers(min_value=0, max_value=50))):
        value = [value] if draw(st.booleans()) else {draw(TEXT): value}
    return value


VALUES = st.dictionaries(TEXT, TREES | deep(), min_size=1, max_size=4)


def test_generated_values_through_inputs_and_outputs_verify_intact(make_pipeline, tmp_path):
    name = make_pipeline(STEPS)
    path = tmp_path / "audit.jsonl"

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(VALUES)
    def check(inputs: dict[str, Any]) -> None:
        run = drive(services.run_start(pipeline=name, inputs=inputs))
        assert run.status == Run.Status.SUCCEEDED
        assert "audit trail intact" in verify("--run", str(run.pk))
        assert "audit trail intact" in export_then_verify(run, path)

    check()


@settings(max_examples=100, deadline=None)
@given(TREES | deep())
def test_canonical_numbers_survive_jsonb_and_sqlite_text(value):
    """numbers() of what jsonb (and SQLite's JSON text) give back is numbers() of the value."""
    sent = json.dumps(value)
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::jsonb::text", [sent])
        (returned,) = cursor.fetchone()
    assert numbers(json.loads(returned)) == numbers(value)
    again = json.dumps(numbers(json.loads(returned)), sort_keys=True)
    assert again == json.dumps(numbers(value), sort_keys=True)
    assert numbers(json.loads(sent)) == numbers(value)  # SQLite stores json.dumps' text


# --- on a real worker ------------------------------------------------------------------


@pytest.mark.worker
def test_a_worker_run_with_awkward_values_verifies_intact(worker, make_pipeline, tmp_path):
    inputs = {**AWKWARD, "text": "z\u00e9\u4e2d\U0001f600", "int": BIG, "deep": [[[{"x": -0.0}]]]}
    run = wait_finished(services.run_start(pipeline=make_pipeline(STEPS), inputs=inputs))

    assert run.status == Run.Status.SUCCEEDED
    assert all(e.hash == entry_hash(e) for e in AuditEntry.objects.filter(run=run))
    assert "audit trail intact" in verify("--run", str(run.pk))
    assert "audit trail intact" in export_then_verify(run, tmp_path / "audit.jsonl")
