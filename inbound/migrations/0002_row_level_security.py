"""The inbound hook tables join the tenant tables under row-level security (PostgreSQL
only; orgs/migrations/0003_row_level_security.py made the function and the role)."""

from django.db import migrations

TABLES = ["inbound_inboundhook", "inbound_inbounddelivery"]

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


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(INSTALL.format(table=table), params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(UNINSTALL.format(table=table), params=None)


class Migration(migrations.Migration):
    dependencies = [("inbound", "0001_inbound_hooks"), ("orgs", "0004_outbox_row_level_security")]

    operations = [migrations.RunPython(install, uninstall)]
