"""On PostgreSQL, TRUNCATE of audit entries and security events is refused unless the session
is a superuser; the `firefly.audit_truncate` setting no longer lets anything through.

0002 let a session TRUNCATE audit entries when the custom setting `firefly.audit_truncate`
was 'allow', meant for a test suite's clean-up. Any session may SET a custom setting, so it
was an escape for anyone who could write to the table, not a permission. What replaces it:

- `is_superuser` is reported by the server for the session's current role (SET ROLE and
  SET SESSION AUTHORIZATION change it); no session can SET it. A superuser could drop the
  trigger or turn triggers off (session_replication_role) anyway, so letting one TRUNCATE
  gives nobody a power they lacked. The test suite connects as a superuser and empties
  every table between transactional tests; the app connects as an ordinary role
  (`manage.py database_roles`, docs/security.md), which has no TRUNCATE privilege either.
- The TRUNCATE triggers get a function of their own, so the row triggers' function (which
  still names the old setting for TRUNCATE, now never reached) can change in later
  migrations without reopening it. Security events, guarded against UPDATE and DELETE
  since 0007, get the TRUNCATE trigger they lacked.
"""

from django.db import migrations

INSTALL = """
CREATE OR REPLACE FUNCTION firefly_append_only_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('is_superuser') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit entries are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER IF EXISTS auditentry_no_truncate ON pipelines_auditentry;
CREATE TRIGGER auditentry_no_truncate
    BEFORE TRUNCATE ON pipelines_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION firefly_append_only_truncate();
DROP TRIGGER IF EXISTS securityevent_no_truncate ON pipelines_securityevent;
CREATE TRIGGER securityevent_no_truncate
    BEFORE TRUNCATE ON pipelines_securityevent
    FOR EACH STATEMENT EXECUTE FUNCTION firefly_append_only_truncate();
"""

# Back to 0002's trigger (the setting-based escape) and no trigger on security events.
UNINSTALL = """
DROP TRIGGER IF EXISTS securityevent_no_truncate ON pipelines_securityevent;
DROP TRIGGER IF EXISTS auditentry_no_truncate ON pipelines_auditentry;
CREATE TRIGGER auditentry_no_truncate
    BEFORE TRUNCATE ON pipelines_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION firefly_audit_append_only();
DROP FUNCTION IF EXISTS firefly_append_only_truncate();
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNINSTALL, params=None)


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0016_audit_key_ids_and_redaction")]

    operations = [migrations.RunPython(install, uninstall)]
