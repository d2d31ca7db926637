"""On PostgreSQL, a trigger refuses UPDATE, DELETE and TRUNCATE of audit entries."""

from django.db import migrations

INSTALL = """
CREATE OR REPLACE FUNCTION firefly_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A database may allow TRUNCATE for maintenance or a test suite's clean-up with
    -- ALTER DATABASE ... SET firefly.audit_truncate = 'allow' (owner or superuser).
    IF TG_OP = 'TRUNCATE' AND current_setting('firefly.audit_truncate', true) = 'allow' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit entries are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER auditentry_append_only
    BEFORE UPDATE OR DELETE ON pipelines_auditentry
    FOR EACH ROW EXECUTE FUNCTION firefly_audit_append_only();
CREATE TRIGGER auditentry_no_truncate
    BEFORE TRUNCATE ON pipelines_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION firefly_audit_append_only();
"""

UNINSTALL = """
DROP TRIGGER IF EXISTS auditentry_no_truncate ON pipelines_auditentry;
DROP TRIGGER IF EXISTS auditentry_append_only ON pipelines_auditentry;
DROP FUNCTION IF EXISTS firefly_audit_append_only();
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNINSTALL, params=None)


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall)]
