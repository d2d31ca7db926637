"""A tenant table's row-level security policy, as a migration operation (PostgreSQL only).

orgs/migrations/0003_row_level_security.py made the `firefly_organization()` function and
the `firefly_tenant` role; every table with an `organization_id` made since joins the
policy with `tenant_policy("app_table", ...)` in its migration's operations.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

INSTALL = """
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
CREATE POLICY firefly_tenant ON {table}
    USING (firefly_organization() IS NULL OR organization_id = firefly_organization());
"""

UNINSTALL = """
DROP POLICY IF EXISTS firefly_tenant ON {table};
ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;
ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;
"""


def tenant_policy(*tables: str) -> migrations.RunPython:
    """Hold the tables' rows to the organization a connection entered (orgs/rls.py)."""

    def run(sql: str, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            for table in tables:
                schema_editor.execute(sql.format(table=table), params=None)

    return migrations.RunPython(
        lambda apps, schema_editor: run(INSTALL, schema_editor),
        lambda apps, schema_editor: run(UNINSTALL, schema_editor),
    )
