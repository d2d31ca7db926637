"""The outbox table joins the tenant tables under row-level security (PostgreSQL only)."""

from django.db import migrations

TABLE = "pipelines_outboxevent"

INSTALL = f"""
ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY;
CREATE POLICY firefly_tenant ON {TABLE}
    USING (firefly_organization() IS NULL OR organization_id = firefly_organization());
"""

UNINSTALL = f"""
DROP POLICY IF EXISTS firefly_tenant ON {TABLE};
ALTER TABLE {TABLE} NO FORCE ROW LEVEL SECURITY;
ALTER TABLE {TABLE} DISABLE ROW LEVEL SECURITY;
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNINSTALL, params=None)


class Migration(migrations.Migration):
    dependencies = [("orgs", "0003_row_level_security"), ("pipelines", "0015_outbox")]

    operations = [migrations.RunPython(install, uninstall)]
