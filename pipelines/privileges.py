"""The PostgreSQL roles Firefly runs as: the SQL that gives the app only the rights it needs."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Tables whose rows, once written, stay as they are: the app and the tenant role may read
# them and add to them, nothing else. Their triggers refuse UPDATE, DELETE and TRUNCATE
# even to the owner; the grants make the app unable to touch the triggers or the rows.
# A new append-only table is added here (and given the triggers in its migration).
APPEND_ONLY_TABLES: tuple[str, ...] = (
    "pipelines_auditentry",
    "pipelines_securityevent",
    "pipelines_auditledger",
)

# Columns of an append-only table the app may still UPDATE: redaction empties an audit
# entry's content and stamps it, which its trigger allows in that one shape. Granted
# only where the table has every one of them (a database migrated before redaction has
# not).
REDACTABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "pipelines_auditentry": (
        "inputs",
        "outputs",
        "data",
        "error_message",
        "pause_reason",
        "redacted_at",
    ),
}

# Tables the app reads but never writes: which migrations ran is the migration role's.
READ_ONLY_TABLES: tuple[str, ...] = ("django_migrations",)

# Made by orgs/migrations/0003_row_level_security.py (orgs.rls.ROLE): sessions SET ROLE to
# it while they act for one organization, so it needs the same limits as the login role.
TENANT_ROLE = "firefly_tenant"

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def checked_name(name: str, what: str = "role") -> str:
    """A PostgreSQL identifier that needs no quoting, or ValueError naming the problem."""
    if not _NAME.match(name):
        raise ValueError(
            f"{what} {name!r}: use lower-case letters, digits and underscores "
            "(at most 63, not starting with a digit)"
        )
    return name


@dataclass(frozen=True)
class Plan:
    """What to set up: the app's login role in one database's schema."""

    role: str
    database: str
    schema: str = "public"
    # The password as an SQL string literal, quoted by the database driver; None keeps
    # the role's password as it is (a new role then has none).
    password_literal: str | None = None
    # Columns each table has, from the database: redaction grants need them all present.
    columns: dict[str, set[str]] | None = None


def statements(plan: Plan) -> list[str]:
    """The SQL, in order; running it again changes nothing (safe after each migrate)."""
    app = checked_name(plan.role)
    tenant = TENANT_ROLE
    schema = checked_name(plan.schema, "schema")
    database = '"' + plan.database.replace('"', '""') + '"'
    both = f"{app}, {tenant}"
    password = f" PASSWORD {plan.password_literal}" if plan.password_literal else ""
    sql = [
        "-- The login role the app connects as: no superuser, no BYPASSRLS, owns nothing.",
        _create_role(app, "LOGIN"),
        f"ALTER ROLE {app} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
        f" NOBYPASSRLS INHERIT{password};",
        "-- The role sessions SET ROLE into to act for one organization (row-level security).",
        _create_role(tenant, "NOLOGIN"),
        f"ALTER ROLE {tenant} WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
        " NOBYPASSRLS;",
        f"GRANT {tenant} TO {app};",
        f"GRANT CONNECT ON DATABASE {database} TO {app};",
        f"GRANT USAGE ON SCHEMA {schema} TO {both};",
        "-- Reading and writing rows of the application's tables; never TRUNCATE, TRIGGER,",
        "-- REFERENCES or DDL: ALTER, DROP and DISABLE TRIGGER need the owner.",
        f"REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {schema} FROM {both};",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {both};",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {both};",
    ]
    for table in READ_ONLY_TABLES:
        sql += [f"REVOKE ALL ON {schema}.{table} FROM {both};"]
        sql += [f"GRANT SELECT ON {schema}.{table} TO {both};"]
    sql.append("-- Append-only tables: read and add rows, nothing else.")
    for table in APPEND_ONLY_TABLES:
        # REVOKE ALL on the table also takes back any column-level grant.
        sql += [f"REVOKE ALL ON {schema}.{table} FROM {both};"]
        sql += [f"GRANT SELECT, INSERT ON {schema}.{table} TO {both};"]
        redactable = REDACTABLE_COLUMNS.get(table, ())
        present = (plan.columns or {}).get(table, set())
        if redactable and set(redactable) <= present:
            listed = ", ".join(redactable)
            sql += [f"GRANT UPDATE ({listed}) ON {schema}.{table} TO {both};"]
    return sql


def _create_role(name: str, login: str) -> str:
    # Roles belong to the whole server; another database's set-up may have made it.
    return (
        "DO $$ BEGIN\n"
        f"    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN\n"
        f"        CREATE ROLE {name} {login};\n"
        "    END IF;\n"
        "END $$;"
    )


# Checked after applying, for the app's role and the tenant role: each row is a right the
# role should not have. (has_table_privilege sees table-level UPDATE only, not the
# redaction columns.)
PROBLEMS = """
SELECT 'is a superuser or may bypass row-level security'
  FROM pg_roles WHERE rolname = %(role)s AND (rolsuper OR rolbypassrls)
UNION ALL
SELECT 'owns ' || c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND pg_has_role(%(role)s, c.relowner, 'USAGE')
UNION ALL
SELECT 'may ' || p.privilege || ' ' || t
  FROM unnest(%(append_only)s::text[]) AS t,
       unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER']) AS p(privilege)
 WHERE to_regclass(%(schema)s || '.' || t) IS NOT NULL
   AND has_table_privilege(%(role)s, %(schema)s || '.' || t, p.privilege)
"""
