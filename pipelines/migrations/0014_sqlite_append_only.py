"""On SQLite, triggers refuse UPDATE and DELETE of audit entries and security events.

PostgreSQL has had its triggers since 0002 and 0007. SQLite has no TRUNCATE (a DELETE
without WHERE fires the trigger too). SQLite drops a table's triggers when a migration
rebuilds the table, so a later migration that alters either table must install them again.
"""

from django.db import migrations

TABLES = ("pipelines_auditentry", "pipelines_securityevent")


def _install(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"
        for op in ("UPDATE", "DELETE")
    ]


INSTALL = [sql for table in TABLES for sql in _install(table)]
UNINSTALL = [
    f"DROP TRIGGER IF EXISTS {table}_no_{op}" for table in TABLES for op in ("update", "delete")
]


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in INSTALL:
            schema_editor.execute(sql, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in UNINSTALL:
            schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0013_audit_hash_scheme")]

    operations = [migrations.RunPython(install, uninstall)]
