"""A transaction's inserts and updates, sent to the database in one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from django.db import DataError, connection, models


class Stale(Exception):
    """An UPDATE's `expect` columns no longer held: the row changed meanwhile."""


def _column(model: type[models.Model], name: str) -> tuple[models.Field[Any, Any], str]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field, connection.ops.quote_name(field.column or name)


class Batch:
    """Collects INSERT and UPDATE statements and executes them together.

    A step outcome writes four or five small statements. On PostgreSQL they go out in
    one psycopg pipeline, so the writes cost one network round trip instead of one per
    statement; elsewhere (SQLite) they run one after the other. Nothing is read back:
    rows that need their new primary key are created with the ORM instead.
    """

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[Any]]] = []

    def insert(self, rows: Sequence[models.Model]) -> None:
        if not rows:
            return
        meta = rows[0]._meta
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(f.column or f.name) for f in fields)
        placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
        params = [
            f.get_db_prep_save(getattr(row, f.attname), connection) for row in rows for f in fields
        ]
        sql = (
            f"INSERT INTO {quote(meta.db_table)} ({columns}) "
            f"VALUES {', '.join([placeholders] * len(rows))}"
        )
        self.statements.append((sql, params))

    def update(
        self,
        model: type[models.Model],
        pk: int,
        values: dict[str, Any],
        expect: dict[str, Any] | None = None,
    ) -> None:
        """UPDATE one row by primary key, only while its `expect` columns still hold.

        On PostgreSQL an UPDATE with `expect` that finds no such row fails (raising
        Stale) and so aborts the transaction: the statements sent after it in the same
        pipeline, a COMMIT included, cannot take effect.
        """
        assignments, where, params = [], [], []
        for name, value in values.items():
            field, column = _column(model, name)
            assignments.append(f"{column} = %s")
            params.append(field.get_db_prep_save(value, connection))
        for name, value in {"pk": pk, **(expect or {})}.items():
            field, column = _column(model, model._meta.pk.name if name == "pk" else name)
            where.append(f"{column} = %s")
            params.append(value)
        table = connection.ops.quote_name(model._meta.db_table)
        sql = f"UPDATE {table} SET {', '.join(assignments)} WHERE {' AND '.join(where)}"
        if expect and connection.vendor == "postgresql":
            # Dividing by the number of rows changed: zero rows is an error, not a result.
            sql = f"WITH changed AS ({sql} RETURNING 1) SELECT 1 / count(*) FROM changed"
        self.statements.append((sql, params))

    def execute(self, *, commit: bool = False) -> int:
        """Run the statements in order; return the number of rows the first one changed.

        With `commit` (PostgreSQL only) a COMMIT ends the same pipeline: the writes and
        the commit cost one round trip, and the caller's commit finds nothing left to do.
        """
        if not self.statements:
            return 0
        (first_sql, first_params), *rest = self.statements
        self.statements = []
        if connection.vendor == "postgresql":
            connection.ensure_connection()
            raw = connection.connection
            # Server-side binding sends each statement apart from its parameters, which
            # lets the pipeline send them all before reading any result.
            # wrap_database_errors turns psycopg's errors into Django's, as the ORM does.
            try:
                with (
                    connection.wrap_database_errors,
                    psycopg.Cursor(raw) as first,
                    psycopg.Cursor(raw) as cursor,
                    raw.pipeline(),
                ):
                    first.execute(first_sql, first_params)
                    for sql, params in rest:
                        cursor.execute(sql, params)
                    if commit:
                        cursor.execute("COMMIT")
            except DataError as exc:
                if isinstance(exc.__cause__, psycopg.errors.DivisionByZero):
                    raise Stale from exc
                raise
            return first.rowcount
        with connection.cursor() as first_cursor, connection.cursor() as other:
            first_cursor.execute(first_sql, first_params)
            for sql, params in rest:
                other.execute(sql, params)
            return first_cursor.rowcount
