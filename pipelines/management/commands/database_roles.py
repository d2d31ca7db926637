"""`manage.py database_roles --print | --apply [--role NAME]`: the least-privileged login role
the app connects as on PostgreSQL."""

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection, transaction

from pipelines import privileges

PASSWORD_ENV = "FIREFLY_APP_DB_PASSWORD"  # noqa: S105 (the variable's name, not a password)


class Command(BaseCommand):
    help = (
        "Print or apply the SQL that makes the login role Firefly's app connects as: it owns "
        "no table, may read and write rows, and may only SELECT and INSERT on the "
        "append-only tables (audit entries, security events). Run it as the role that ran "
        "the migrations (the tables' owner), again after every migrate."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--print", action="store_true", help="print the SQL, change nothing")
        mode.add_argument("--apply", action="store_true", help="run the SQL, then check it")
        parser.add_argument("--role", default="firefly_app", help="the app's login role")
        parser.add_argument(
            "--password",
            default=None,
            help=f"the role's password (default: ${PASSWORD_ENV}; unset keeps the present one)",
        )
        parser.add_argument("--schema", default="public")

    def handle(self, *args: Any, role: str, schema: str, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError(
                f"database_roles is for PostgreSQL; this database is {connection.vendor}."
            )
        password = options["password"] or os.environ.get(PASSWORD_ENV) or None
        try:
            plan = privileges.Plan(
                role=privileges.checked_name(role),
                database=connection.settings_dict["NAME"],
                schema=privileges.checked_name(schema, "schema"),
                password_literal=_literal(password) if password else None,
                columns=_columns(schema),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        statements = privileges.statements(plan)
        if options["print"]:
            self.stdout.write("\n".join(statements).replace(plan.password_literal or "\0", "'…'"))
            return
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                for statement in statements:
                    if not statement.startswith("--"):
                        cursor.execute(statement)
        except DatabaseError as exc:
            raise CommandError(f"could not apply the roles: {exc}".strip()) from None
        problems = _problems(plan)
        if problems:
            raise CommandError("the roles can do more than they should: " + "; ".join(problems))
        self.stdout.write(
            f"{plan.role} may read and write Firefly's rows and only read and add to "
            f"{', '.join(privileges.APPEND_ONLY_TABLES)}; it owns no table."
        )


def _literal(value: str) -> str:
    # The server quotes it: a password is data, never SQL.
    with connection.cursor() as cursor:
        cursor.execute("SELECT quote_literal(%s)", [value])
        return str(cursor.fetchone()[0])


def _columns(schema: str) -> dict[str, set[str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = ANY(%s)",
            [schema, list(privileges.APPEND_ONLY_TABLES)],
        )
        columns: dict[str, set[str]] = {}
        for table, column in cursor.fetchall():
            columns.setdefault(table, set()).add(column)
    return columns


def _problems(plan: privileges.Plan) -> list[str]:
    found = []
    with connection.cursor() as cursor:
        for role in (plan.role, privileges.TENANT_ROLE):
            cursor.execute(
                privileges.PROBLEMS,
                {
                    "role": role,
                    "schema": plan.schema,
                    "append_only": list(privileges.APPEND_ONLY_TABLES),
                },
            )
            found += [f"{role} {what}" for (what,) in cursor.fetchall()]
    return found
