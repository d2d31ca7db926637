"""Statements bound on the server: prepared once per connection, not planned each time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from django.db import connection


def fetch_one(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Run one statement; its first row, or None.

    On PostgreSQL the statement is bound on the server, so that the connection prepares
    it after a few runs (DATABASES' `prepare_threshold`) and skips parsing and planning
    from then on. The ORM binds on the client, and its queries are never prepared: this
    is for the statements every step or task runs.
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() if cursor.description else None
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() if cursor.description else None
