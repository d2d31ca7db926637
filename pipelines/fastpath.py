"""The raw-SQL paths every step takes: batched writes, the run lock and step states, the claim."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from django.db import DataError, connection, models

from firefly_site.sql import fetch_all, fetch_one, pipeline
from pipelines import engine
from pipelines.models import Run, StepRun

S = StepRun.Status


class Stale(Exception):
    """An UPDATE's `expect` columns no longer held: the row changed meanwhile."""


# Preparing a value the way Django does (`get_db_prep_save`) costs a few calls per
# field, and a step writes about fifty. With psycopg, only JSON needs it (psycopg adapts
# strings, numbers, booleans and aware datetimes itself); other backends get it all.
Prep = models.Field | None


def _prep(field: models.Field[Any, Any], vendor: str) -> Prep:
    return field if vendor != "postgresql" or isinstance(field, models.JSONField) else None


def _params(values: Any, preps: Sequence[Prep]) -> list[Any]:
    return [
        value if prep is None else prep.get_db_prep_save(value, connection)
        for value, prep in zip(values, preps, strict=True)
    ]


@lru_cache(maxsize=64)
def _insert_plan(
    model: type[models.Model], vendor: str
) -> tuple[str, str, tuple[str, ...], tuple[Prep, ...]]:
    """(INSERT ... VALUES, one row's placeholders, attribute names, preparations)."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column or f.name) for f in fields)
    head = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES "
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return (
        head,
        placeholders,
        tuple(f.attname for f in fields),
        tuple(_prep(f, vendor) for f in fields),
    )


@lru_cache(maxsize=16)
def _typed(model: type[models.Model]) -> str:
    """A row's placeholders for INSERT ... SELECT, each cast to its column's type: a
    SELECT list, unlike VALUES, would take a parameter of no type (a None) for text."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    return ", ".join(f"CAST(%s AS {f.db_type(connection)})" for f in fields)


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


@lru_cache(maxsize=256)
def _update_plan(
    model: type[models.Model], names: tuple[str, ...], expect: tuple[str, ...], vendor: str
) -> tuple[str, tuple[Prep, ...]]:
    """(UPDATE ... SET the names ... WHERE pk and the expected columns, preparations)."""
    quote = connection.ops.quote_name
    fields = [_field(model, name) for name in names]
    keys = [_field(model, name) for name in (model._meta.pk.name, *expect)]
    assignments = ", ".join(f"{quote(f.column or f.name)} = %s" for f in fields)
    where = " AND ".join(f"{quote(f.column or f.name)} = %s" for f in keys)
    sql = f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {where}"
    if expect and vendor == "postgresql":
        # Dividing by the number of rows changed: zero rows is an error, not a result.
        sql = f"WITH changed AS ({sql} RETURNING 1) SELECT 1 / count(*) FROM changed"
    return sql, tuple(_prep(f, vendor) for f in fields)


class Batch:
    """Collects INSERT and UPDATE statements and executes them together.

    A step outcome writes four or five small statements. On PostgreSQL they go out in
    one psycopg pipeline, so the writes cost one network round trip instead of one per
    statement; elsewhere (SQLite) they run one after the other. Nothing is read back but
    row counts: rows that need their new primary key are created with the ORM instead.
    """

    def __init__(self) -> None:
        # (SQL, parameters); with several rows of one INSERT, (SQL, a list of each row's).
        self.statements: list[tuple[str, list[Any]]] = []
        self.many: set[int] = set()  # indexes of the statements run once per row
        self.counted: set[int] = set()  # indexes of the statements whose rows are counted
        # After execute: how many rows the counted statements wrote.
        self.written = 0

    def insert(self, rows: Sequence[models.Model]) -> None:
        if not rows:
            return
        head, placeholders, names, preps = _insert_plan(type(rows[0]), connection.vendor)
        each = [_params([getattr(row, name) for name in names], preps) for row in rows]
        if len(rows) > 1 and connection.vendor == "postgresql":
            # One statement per row in the same pipeline: the one-row text is parsed once
            # per process and prepared by the server, where a VALUES list of many rows
            # (over psycopg's 50 parameters) would be parsed again on every call.
            self.many.add(len(self.statements))
            self.statements.append((head + placeholders, each))
            return
        sql = head + ", ".join([placeholders] * len(rows))
        self.statements.append((sql, [value for row in each for value in row]))

    def insert_where(self, row: models.Model, condition: str, params: Sequence[Any]) -> None:
        """INSERT one row only where `condition` holds, evaluated by the same statement;
        after execute, `written` counts the rows such inserts wrote."""
        head, _, names, preps = _insert_plan(type(row), connection.vendor)
        values = _params([getattr(row, name) for name in names], preps)
        self.counted.add(len(self.statements))
        sql = f"{head.removesuffix(' VALUES ')} SELECT {_typed(type(row))} WHERE {condition}"
        self.statements.append((sql, [*values, *params]))

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
        expect = expect or {}
        sql, preps = _update_plan(model, tuple(values), tuple(expect), connection.vendor)
        params = [*_params(values.values(), preps), pk, *expect.values()]
        self.statements.append((sql, params))

    def execute(self, *, commit: bool = False) -> int:
        """Run the statements in order; return the number of rows the first one changed.

        With `commit` (PostgreSQL only) a COMMIT ends the same pipeline: the writes and
        the commit cost one round trip, and the caller's commit finds nothing left to do.
        """
        if not self.statements:
            return 0
        (first_sql, first_params), *rest = self.statements
        many = {i - 1 for i in self.many}  # indexes in `rest`
        counted = {i - 1 for i in self.counted}
        assert not {0} & (self.many | self.counted), "the first statement's row count is returned"
        self.statements, self.many, self.counted, self.written = [], set(), set(), 0
        if connection.vendor == "postgresql":
            connection.ensure_connection()
            raw = connection.connection
            # Server-side binding sends each statement apart from its parameters, which
            # lets the pipeline send them all before reading any result.
            # wrap_database_errors turns psycopg's errors into Django's, as the ORM does.
            # A cursor of its own for each counted statement (a cursor's row count is
            # its last statement's), in their order.
            counting = [psycopg.Cursor(raw) for _ in counted]
            counters = iter(counting)
            try:
                with connection.wrap_database_errors, psycopg.Cursor(raw) as first:
                    with pipeline(raw) as cursor:
                        first.execute(first_sql, first_params)
                        for i, (sql, params) in enumerate(rest):
                            if i in many:
                                cursor.executemany(sql, params)
                            elif i in counted:
                                next(counters).execute(sql, params)
                            else:
                                cursor.execute(sql, params)
                        if commit:
                            cursor.execute("COMMIT")
                    self.written = sum(max(c.rowcount, 0) for c in counting)
            except DataError as exc:
                if isinstance(exc.__cause__, psycopg.errors.DivisionByZero):
                    raise Stale from exc
                raise
            finally:
                for counter in counting:
                    counter.close()
            return first.rowcount
        with connection.cursor() as first_cursor, connection.cursor() as other:
            first_cursor.execute(first_sql, first_params)
            for i, (sql, params) in enumerate(rest):
                other.execute(sql, params)
                if i in counted:
                    self.written += max(other.rowcount, 0)
            return first_cursor.rowcount


# Lean reads for the paths every step takes: plain SQL skips the ORM's query building,
# which costs more than the round trip itself at a few milliseconds per step.

STATES_SQL = (
    "SELECT step_name, id, status, generation, attempt "
    f"FROM {StepRun._meta.db_table} WHERE run_id = %s"
)


def lock_run(run_id: int) -> tuple[Run | None, dict[str, engine.StepState] | None]:
    """Lock the run row and read its steps' states, in one round trip where possible.

    On PostgreSQL both statements go out in one pipeline: the second runs once the
    first holds the lock, so it reads the steps as the lock holder sees them.
    """
    meta = Run._meta
    if connection.vendor != "postgresql":
        # SQLite locks the whole database for the write transaction instead.
        run = next(
            iter(Run.objects.raw(f"SELECT * FROM {meta.db_table} WHERE id = %s", [run_id])), None
        )
        return (run, read_states(run_id)) if run else (None, None)
    columns, run_sql = _locking_select("id = %s")
    rows, step_rows = _in_one_trip((run_sql, [run_id]), (STATES_SQL, [run_id]))
    if not rows:
        return None, None
    return _run_from_row(columns, rows[0]), _states_from_rows(step_rows)


def _locking_select(where: str) -> tuple[list[Any], str]:
    """The run table's columns, and the SELECT ... FOR UPDATE of its rows `where` says."""
    quote = connection.ops.quote_name
    columns = list(Run._meta.concrete_fields)
    names = ", ".join(quote(f.column or f.name) for f in columns)
    return columns, f"SELECT {names} FROM {quote(Run._meta.db_table)} WHERE {where} FOR UPDATE"


def _in_one_trip(*statements: tuple[str, list[Any]]) -> list[list[Any]]:
    """Statements in one pipeline (one round trip), each run once the one before is done:
    the rows of each."""
    connection.ensure_connection()
    raw = connection.connection
    with connection.wrap_database_errors:
        cursors = [psycopg.Cursor(raw) for _ in statements]
        try:
            with pipeline(raw):
                for cursor, (sql, params) in zip(cursors, statements, strict=True):
                    cursor.execute(sql, params)
            return [cursor.fetchall() for cursor in cursors]
        finally:
            for cursor in cursors:
                cursor.close()


def _run_from_row(columns: list[Any], row: Sequence[Any]) -> Run:
    # psycopg returns timestamps aware; Django reads jsonb as text for JSONField to parse.
    values = [
        f.from_db_value(v, None, connection) if hasattr(f, "from_db_value") and v is not None else v
        for f, v in zip(columns, row, strict=True)
    ]
    return Run.from_db(connection.alias, [f.attname for f in columns], values)


def lock_runs(run_ids: Sequence[int]) -> dict[int, tuple[Run, dict[str, engine.StepState]]]:
    """Lock many runs and read their steps' states, in one round trip where possible.

    The rows are locked in id order, the one order every batch takes: two batches over
    overlapping runs wait for each other instead of deadlocking, and a single decision
    holds one run's lock only, so it cannot close a cycle with them. A run that does not
    exist is left out.
    """
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    if connection.vendor != "postgresql":
        runs = Run.objects.filter(pk__in=ids).order_by("pk")
        return {run.pk: (run, read_states(run.pk)) for run in runs}
    columns, run_sql = _locking_select("id = ANY(%s) ORDER BY id")
    states_sql = (
        "SELECT run_id, step_name, id, status, generation, attempt "
        f"FROM {StepRun._meta.db_table} WHERE run_id = ANY(%s)"
    )
    rows, step_rows = _in_one_trip((run_sql, [ids]), (states_sql, [ids]))
    steps: dict[int, list[Any]] = {}
    for run_id, *step in step_rows:
        steps.setdefault(run_id, []).append(step)
    found = {}
    for row in rows:
        run = _run_from_row(columns, row)
        found[run.pk] = (run, _states_from_rows(steps.get(run.pk, [])))
    return found


def read_states(run_id: int) -> dict[str, engine.StepState]:
    """Each step's current attempt, as the engine sees it (a plain read, no lock)."""
    with connection.cursor() as cursor:
        cursor.execute(STATES_SQL, [run_id])
        return _states_from_rows(cursor.fetchall())


def _states_from_rows(rows: list[Any]) -> dict[str, engine.StepState]:
    return engine.latest(
        (name, engine.StepState(pk, status, generation, attempt))
        for name, pk, status, generation, attempt in rows
    )


def claim(step_run_id: int, now: datetime, lease_until: datetime) -> StepRun | None:
    """queued -> running in one statement; returns the step with its run, or None.

    Claiming again with the same `now` finds the step already claimed by that first try
    (started at that very instant) and returns it too: a claim that committed just before
    the connection broke is not lost with its answer.
    """
    row = fetch_one(
        f"UPDATE {StepRun._meta.db_table} SET status = %s, started_at = %s, lease_until = %s "
        "WHERE id = %s AND (status = %s OR (status = %s AND started_at = %s)) "
        "RETURNING run_id, step_name, generation, attempt",
        [S.RUNNING, now, lease_until, step_run_id, S.QUEUED, S.RUNNING, now],
    )
    if row is None:
        return None
    run_id, step_name, generation, attempt = row
    return StepRun(
        id=step_run_id,
        run=_run_for_steps(run_id),
        step_name=step_name,
        generation=generation,
        attempt=attempt,
        status=S.RUNNING,
        started_at=now,
        lease_until=lease_until,
    )


@lru_cache(maxsize=1024)
def _run_for_steps(run_id: int) -> Run:
    """What a step handler needs of its run (inputs and version never change), in one
    prepared statement rather than a query the ORM builds for every run."""
    wanted = ("id", "organization", "pipeline_version", "inputs", "trace_id")
    columns = [_field(Run, name) for name in wanted]
    names = ", ".join(connection.ops.quote_name(f.column or f.name) for f in columns)
    row = fetch_one(f"SELECT {names} FROM {Run._meta.db_table} WHERE id = %s", [run_id])
    if row is None:
        raise Run.DoesNotExist(f"No run {run_id}.")
    return _run_from_row(columns, row)


def step_outputs(step_ids: Sequence[int]) -> dict[str, Any]:
    """The outputs of these step attempts, by step name."""
    if connection.vendor != "postgresql":
        return dict(StepRun.objects.filter(pk__in=step_ids).values_list("step_name", "outputs"))
    field: Any = StepRun._meta.get_field("outputs")  # Django reads jsonb as text to parse
    rows = fetch_all(
        f"SELECT step_name, outputs FROM {StepRun._meta.db_table} WHERE id = ANY(%s)",
        [list(step_ids)],
    )
    return {
        name: field.from_db_value(value, None, connection) if value is not None else None
        for name, value in rows
    }
