"""On SQLite, the migrated schema refuses UPDATE and DELETE of audit entries and security
events (the suite runs on PostgreSQL: this test migrates a SQLite file of its own)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from pipelines.models import AuditEntry, SecurityEvent

TABLES = [AuditEntry._meta.db_table, SecurityEvent._meta.db_table]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated by `manage.py migrate`, as a fresh install would be."""
    path = tmp_path_factory.mktemp("sqlite") / "firefly.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{path}",
        "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        cwd=settings.BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return path


def a_row(db: sqlite3.Connection, table: str) -> int:
    """Insert a row with every NOT NULL column filled (foreign keys are not enforced here)."""
    columns = [
        (name, kind)
        for _, name, kind, notnull, default, pk in db.execute(f"PRAGMA table_info({table})")
        if notnull and default is None and not pk
    ]
    # A new number each time keeps (pipeline, seq) unique; "{}" passes the JSON columns'
    # checks, and SQLite takes it in any other text column.
    (number,) = db.execute(f"SELECT count(*) + 1 FROM {table}").fetchone()
    values = [number if "int" in kind.lower() else "{}" for _, kind in columns]
    cursor = db.execute(
        f"INSERT INTO {table} ({', '.join(n for n, _ in columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})",
        values,
    )
    db.commit()
    assert cursor.lastrowid is not None
    return cursor.lastrowid


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE {table} SET id = id WHERE id = {row}",
        "DELETE FROM {table} WHERE id = {row}",
        "DELETE FROM {table}",
    ],
)
def test_sqlite_refuses_update_and_delete(migrated, table, sql):
    db = sqlite3.connect(migrated)
    try:
        row = a_row(db, table)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql.format(table=table, row=row))
        db.rollback()
        assert db.execute(f"SELECT count(*) FROM {table} WHERE id = ?", [row]).fetchone() == (1,)
    finally:
        db.close()


REDACTION = (
    "inputs = NULL, outputs = NULL, data = NULL, error_message = '', pause_reason = '', "
    "redacted_at = '2026-01-01 00:00:00'"
)


@pytest.mark.parametrize(
    "change",
    [
        f"{REDACTION}, hash = 'forged'",
        f"{REDACTION}, content_hash = 'forged'",
        "outputs = NULL",
        "redacted_at = '2026-01-01 00:00:00'",
    ],
)
def test_sqlite_lets_only_a_plain_redaction_through(migrated, change):
    table = AuditEntry._meta.db_table
    db = sqlite3.connect(migrated)
    try:
        row = a_row(db, table)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(f"UPDATE {table} SET {change} WHERE id = ?", [row])
        db.rollback()
        db.execute(f"UPDATE {table} SET {REDACTION} WHERE id = ?", [row])
        db.commit()
        (redacted,) = db.execute(f"SELECT redacted_at FROM {table} WHERE id = ?", [row]).fetchone()
        assert redacted is not None
        # Once redacted, nothing more.
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(f"UPDATE {table} SET {REDACTION} WHERE id = ?", [row])
    finally:
        db.close()
