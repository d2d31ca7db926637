"""A transaction's inserts and updates, sent to the database in one round trip."""

from __future__ import annotations

from typing import Any

from django.db import connection, models


class Batch:
    """Collects INSERT and UPDATE statements and executes them together.

    A step outcome writes four to six small statements; on PostgreSQL they go out in
    one psycopg pipeline, so the step costs one network round trip for its writes
    instead of one per statement. Elsewhere (SQLite) they run one after the other.
    Nothing is read back: rows that need their new primary key use the ORM instead.
    """

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[Any]]] = []

    def insert(self, rows: list[models.Model]) -> None:
        if not rows:
            return
        meta = rows[0]._meta
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(f.column) for f in fields)
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
        """UPDATE one row by primary key, only if its `expect` columns still hold."""
        meta = model._meta
        quote = connection.ops.quote_name
        fields = [meta.get_field(name) for name in values]
        assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)  # type: ignore[union-attr]
        params = [f.get_db_prep_save(values[f.name], connection) for f in fields]  # type: ignore[union-attr]
        where = [f"{quote(meta.pk.column)} = %s"]
        params.append(pk)
        for name, value in (expect or {}).items():
            where.append(f"{quote(meta.get_field(name).column)} = %s")  # type: ignore[union-attr]
            params.append(value)
        sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {' AND '.join(where)}"
        self.statements.append((sql, params))

    def execute(self) -> int:
        """Run the statements in order; returns the row count of the first one."""
        if not self.statements:
            return 0
        (first_sql, first_params), *rest = self.statements
        self.statements = []
        if connection.vendor == "postgresql":
            import psycopg

            connection.ensure_connection()
            raw = connection.connection
            # Server-side binding: each statement is sent with its parameters apart,
            # which the pipeline needs to send them all before reading any result.
            with psycopg.Cursor(raw) as first, psycopg.Cursor(raw) as cursor, raw.pipeline():
                first.execute(first_sql, first_params)
                for sql, params in rest:
                    cursor.execute(sql, params)
            return int(first.rowcount)
        with connection.cursor() as first, connection.cursor() as cursor:
            first.execute(first_sql, first_params)
            for sql, params in rest:
                cursor.execute(sql, params)
            return int(first.rowcount)
