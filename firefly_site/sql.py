"""Statements bound on the server: prepared once per connection, not planned each time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection
from psycopg.pq import TransactionStatus


def fetch_one(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Run one statement; its first row, or None.

    On PostgreSQL the statement is bound on the server, so that the connection prepares
    it after a few runs (DATABASES' `prepare_threshold`) and skips parsing and planning
    from then on. The ORM binds on the client, and its queries are never prepared: this
    is for the statements every step or task runs.
    """
    rows = _run(sql, params, many=False)
    return rows[0] if rows else None


def fetch_all(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one statement, bound on the server as `fetch_one`; all its rows."""
    return _run(sql, params, many=True)


def _run(sql: str, params: Sequence[Any], *, many: bool) -> list[tuple[Any, ...]]:
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return _rows(cursor, many)
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return _rows(cursor, many)


def _rows(cursor: Any, many: bool) -> list[tuple[Any, ...]]:
    if not cursor.description:
        return []
    if many:
        return list(cursor.fetchall())
    row = cursor.fetchone()
    return [row] if row is not None else []


@contextmanager
def pipeline(raw: psycopg.Connection[Any]) -> Iterator[psycopg.Cursor[Any]]:
    """A psycopg pipeline whose transaction, if it has yet to begin, begins in it.

    Inside an atomic block psycopg begins the transaction at the first statement with
    a BEGIN and a sync of its own: a round trip before the pipeline's. Here the BEGIN
    is the pipeline's first statement instead, sent with the rest, and the transaction
    and its locks are the same; Django's block still commits or rolls it back. For that,
    psycopg's own autocommit is on from here until the transaction ends: back off at once
    if the pipeline committed it, else turned on anyway by the block that ends it.
    Django's autocommit, which its blocks go by, is untouched.
    """
    begin = not raw.autocommit and raw.info.transaction_status == TransactionStatus.IDLE
    if begin:
        raw.autocommit = True  # psycopg then sends no BEGIN of its own
    try:
        with raw.pipeline(), psycopg.Cursor(raw) as cursor:
            if begin:
                cursor.execute("BEGIN")
            yield cursor
    finally:
        if begin and raw.info.transaction_status == TransactionStatus.IDLE:
            raw.autocommit = False
