"""Attacks by a session logged in as the app's least-privileged PostgreSQL role
(`manage.py database_roles`): the audit trail and security events stay as written."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from orgs import rls
from pipelines import privileges, services
from pipelines.canonical import CONTENT_FIELDS
from pipelines.models import AuditEntry, Run, SecurityEvent
from pipelines.security import refusal_record
from tests.workers import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "least-privileged-test-password"
# The role that ran the migrations: the tables' owner.
OWNER = settings.DATABASES["default"]["USER"]
AUDIT = AuditEntry._meta.db_table
EVENTS = SecurityEvent._meta.db_table
ESCAPES = [
    "",
    # What let a session TRUNCATE audit entries before: any session may set it.
    "SET firefly.audit_truncate = 'allow'",
]


def role_name() -> str:
    # Roles belong to the whole server, which other test databases share: one per database.
    name = re.sub(r"[^a-z0-9_]", "_", f"firefly_app_{connection.settings_dict['NAME']}".lower())
    return name[:63]


@pytest.fixture
def app_role() -> Iterator[str]:
    role = role_name()
    call_command("database_roles", "--apply", "--role", role, "--password", PASSWORD)
    yield role
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {role}")  # its grants here; it owns nothing
        cursor.execute(f"DROP ROLE {role}")


def connect_as(role: str) -> psycopg.Connection[Any]:
    """A connection of its own, logged in as the role (not SET ROLE from a superuser)."""
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"],
        port=db["PORT"] or 5432,
        dbname=db["NAME"],
        user=role,
        password=PASSWORD,
        autocommit=True,
    )


def evidence() -> Run:
    """A finished run (its audit chain) and a security event."""
    steps = [{"name": "a", "type": "noop"}, {"name": "b", "type": "noop", "after": ["a"]}]
    services.pipeline_create(member_role="starter", spec={"name": "kept", "steps": steps})
    run = services.run_start(pipeline="kept", inputs={"x": 1})
    services.run_advance(run_id=run.pk)
    services.step_execute(step_run_id=run.steps.get(step_name="a").pk)
    refusal_record(event="api.forbidden", reason="kept as evidence")
    return run


def rows() -> list[tuple[Any, ...]]:
    return [
        *AuditEntry.objects.order_by("id").values_list("id", "seq", "hash", "status"),
        *SecurityEvent.objects.order_by("id").values_list("id", "event", "reason"),
    ]


def verify() -> str:
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("table", [AUDIT, EVENTS])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET created_at = created_at - interval '1 day'",
        "DELETE FROM {table}",
        "TRUNCATE {table}",
        "TRUNCATE {table} CASCADE",
    ],
)
def test_the_app_role_cannot_change_or_remove_rows_of_the_append_only_tables(
    app_role, table, statement
):
    evidence()
    before = rows()
    with connect_as(app_role) as session:
        for escape in ESCAPES:
            for tenant in (False, True):
                if escape:
                    session.execute(escape)
                # The role sessions take to act for an organization: limited the same way.
                session.execute(f"SET ROLE {rls.ROLE}" if tenant else "RESET ROLE")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    session.execute(statement.format(table=table))
    assert rows() == before
    assert "audit trail intact" in verify()


@pytest.mark.parametrize(
    "statement",
    [
        f"ALTER TABLE {AUDIT} DISABLE TRIGGER auditentry_append_only",
        f"ALTER TABLE {AUDIT} DISABLE TRIGGER ALL",
        f"ALTER TABLE {EVENTS} DISABLE TRIGGER securityevent_append_only",
        f"DROP TRIGGER auditentry_append_only ON {AUDIT}",
        f"DROP TRIGGER auditentry_no_truncate ON {AUDIT}",
        f"DROP TRIGGER securityevent_no_truncate ON {EVENTS}",
        f"ALTER TABLE {AUDIT} OWNER TO CURRENT_USER",
        f"DROP TABLE {AUDIT} CASCADE",
        "DROP FUNCTION firefly_audit_append_only() CASCADE",
        "CREATE OR REPLACE FUNCTION firefly_append_only_truncate() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
        # Replica mode skips ordinary triggers; only a superuser may enter it.
        "SET session_replication_role = replica",
        # Becoming the tables' owner (the suite's own login) is refused too.
        f"SET ROLE {OWNER}",
        f"SET SESSION AUTHORIZATION {OWNER}",
    ],
)
def test_the_app_role_cannot_turn_the_triggers_off(app_role, statement):
    evidence()
    before = rows()
    with connect_as(app_role) as session:
        for tenant in (False, True):
            session.execute(f"SET ROLE {rls.ROLE}" if tenant else "RESET ROLE")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                session.execute(statement)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid IN (%s::regclass, %s::regclass)"
            " AND NOT tgisinternal AND tgenabled = 'O' ORDER BY tgname",
            [AUDIT, EVENTS],
        )
        enabled = [name for (name,) in cursor.fetchall()]
    assert enabled == [
        "auditentry_append_only",
        "auditentry_no_truncate",
        "securityevent_append_only",
        "securityevent_no_truncate",
    ]
    assert rows() == before
    assert "audit trail intact" in verify()


def test_the_app_role_may_read_and_add_audit_entries_and_security_events(app_role):
    evidence()
    with connect_as(app_role) as session:
        counted = session.execute(f"SELECT count(*) FROM {AUDIT}").fetchone()
        session.execute(
            f"INSERT INTO {EVENTS} (event, actor_name, reason, created_at)"
            " VALUES ('api.forbidden', 'anonymous', 'added by the app', now())"
        )
    assert counted == (AuditEntry.objects.count(),)
    assert SecurityEvent.objects.filter(reason="added by the app").exists()


def test_the_app_role_may_redact_an_entry_and_change_nothing_else(app_role):
    evidence()
    target = AuditEntry.objects.filter(run__isnull=False).order_by("id").first()
    assert target is not None
    with connect_as(app_role) as session:
        for tenant in (False, True):
            session.execute(f"SET ROLE {rls.ROLE}" if tenant else "RESET ROLE")
            # Content columns may be written only in the redaction's shape (the trigger);
            # header columns not at all (the grants).
            for sql in (
                f"UPDATE {AUDIT} SET outputs = '{{\"forged\": 1}}' WHERE id = %s",
                f"UPDATE {AUDIT} SET data = NULL, redacted_at = now(), status = 'x' WHERE id = %s",
                f"UPDATE {AUDIT} SET hash = repeat('0', 64) WHERE id = %s",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    session.execute(sql, [target.pk])
        session.execute(
            f"UPDATE {AUDIT} SET inputs = NULL, outputs = NULL, data = NULL,"
            " error_message = '', pause_reason = '', redacted_at = now() WHERE id = %s",
            [target.pk],
        )
    redacted = AuditEntry.objects.get(pk=target.pk)
    assert redacted.redacted_at is not None
    assert (redacted.hash, redacted.seq, redacted.status) == (
        target.hash,
        target.seq,
        target.status,
    )


def test_the_redactable_columns_are_the_audit_content_and_its_stamp():
    columns = privileges.REDACTABLE_COLUMNS[AUDIT]
    assert set(columns) == {*CONTENT_FIELDS, "redacted_at"}


def test_a_run_with_a_human_gate_finishes_with_the_app_connected_as_the_role(app_role, users):
    steps = [
        {"name": "build", "type": "noop"},
        {
            "name": "review",
            "type": "approval",
            "after": ["build"],
            "config": {"assignee_role": "reviewers"},
        },
        {"name": "deploy", "type": "noop", "after": ["review"]},
    ]
    services.pipeline_create(member_role="starter", spec={"name": "gated", "steps": steps})
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings",
        "DATABASE_URL": (
            f"postgres://{app_role}:{PASSWORD}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PYTHONPATH": str(ROOT),
        "CONN_MAX_AGE": "0",
    }
    done = subprocess.run(
        [sys.executable, "tests/security/app_role_run.py", "gated", "starter", "r1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "audit trail intact" in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["login"] == app_role
    assert result["scoped_as"] == rls.ROLE
    run = Run.objects.get(pk=result["run"])
    assert run.status == Run.Status.SUCCEEDED == result["status"]
    decided = AuditEntry.objects.filter(run=run, event="task.approved")
    assert decided.values_list("actor_name", flat=True).get() == "r1"
    assert "audit trail intact" in verify()


def test_applying_refuses_a_role_that_owns_a_table(app_role):
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE pipelines_outboxevent OWNER TO {app_role}")
    try:
        with pytest.raises(CommandError, match=f"{app_role} owns pipelines_outboxevent"):
            call_command("database_roles", "--apply", "--role", app_role)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE pipelines_outboxevent OWNER TO CURRENT_USER")


def test_printing_shows_the_sql_and_changes_nothing():
    role = role_name() + "_printed"
    out = io.StringIO()
    call_command("database_roles", "--print", "--role", role, "--password", "s3cret'", stdout=out)
    sql = out.getvalue()
    for table in privileges.APPEND_ONLY_TABLES:
        assert f"GRANT SELECT, INSERT ON public.{table} TO {role}, {rls.ROLE};" in sql
    assert "s3cret" not in sql
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [role])
        assert cursor.fetchone() == (0,)


def test_a_role_name_that_is_not_a_plain_identifier_is_refused():
    with pytest.raises(CommandError, match="lower-case letters"):
        call_command("database_roles", "--print", "--role", 'app"; DROP TABLE x; --')
