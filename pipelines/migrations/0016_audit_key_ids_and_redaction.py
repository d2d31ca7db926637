"""Audit entries record their signing key's id and a digest of their content (hash
scheme 3), and may be redacted: the triggers let exactly one UPDATE through.

That UPDATE empties the content fields (inputs, outputs, data, error_message,
pause_reason) and sets `redacted_at` on a row not yet redacted, with every other column
unchanged; anything else is refused, as before. DELETE stays refused. On SQLite, adding
the columns rebuilds the table and drops its triggers, so they are installed again.
"""

from django.db import migrations, models

CONTENT = ("inputs", "outputs", "data", "error_message", "pause_reason", "redacted_at")

POSTGRESQL = """
CREATE OR REPLACE FUNCTION firefly_audit_redaction_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
        AND OLD.redacted_at IS NULL AND NEW.redacted_at IS NOT NULL
        AND NEW.inputs IS NULL AND NEW.outputs IS NULL AND NEW.data IS NULL
        AND NEW.error_message = '' AND NEW.pause_reason = ''
        AND to_jsonb(NEW) - {content} = to_jsonb(OLD) - {content}
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit entries are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER IF EXISTS auditentry_append_only ON pipelines_auditentry;
CREATE TRIGGER auditentry_append_only
    BEFORE UPDATE OR DELETE ON pipelines_auditentry
    FOR EACH ROW EXECUTE FUNCTION firefly_audit_redaction_only();
"""

POSTGRESQL_BACK = """
DROP TRIGGER IF EXISTS auditentry_append_only ON pipelines_auditentry;
CREATE TRIGGER auditentry_append_only
    BEFORE UPDATE OR DELETE ON pipelines_auditentry
    FOR EACH ROW EXECUTE FUNCTION firefly_audit_append_only();
DROP FUNCTION IF EXISTS firefly_audit_redaction_only();
"""


def sqlite_triggers(columns: list[str]) -> list[str]:
    """The append-only triggers of pipelines 0014, the audit UPDATE one allowing redaction."""
    kept = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in columns if c not in CONTENT)
    redaction = (
        "OLD.redacted_at IS NULL AND NEW.redacted_at IS NOT NULL AND NEW.inputs IS NULL"
        " AND NEW.outputs IS NULL AND NEW.data IS NULL AND NEW.error_message = ''"
        f" AND NEW.pause_reason = '' AND {kept}"
    )
    refuse = "SELECT RAISE(ABORT, '{table} is append-only: {op} refused')"
    audit, security = "pipelines_auditentry", "pipelines_securityevent"
    return [
        f"DROP TRIGGER IF EXISTS {audit}_no_update",
        f"CREATE TRIGGER {audit}_no_update BEFORE UPDATE ON {audit} WHEN NOT ({redaction}) "
        f"BEGIN {refuse.format(table=audit, op='UPDATE')}; END",
    ] + [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN {refuse.format(table=table, op=op)}; END"
        for table in (audit, security)
        for op in ("UPDATE", "DELETE")
        if (table, op) != (audit, "UPDATE")
    ]


def install(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        content = "ARRAY[{}]".format(", ".join(f"'{name}'" for name in CONTENT))
        schema_editor.execute(POSTGRESQL.replace("{content}", content), params=None)
    elif connection.vendor == "sqlite":
        model = apps.get_model("pipelines", "AuditEntry")
        columns = [field.column for field in model._meta.local_concrete_fields]
        for sql in sqlite_triggers(columns):
            schema_editor.execute(sql, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_BACK, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS pipelines_auditentry_no_update", params=None)
        schema_editor.execute(
            "CREATE TRIGGER pipelines_auditentry_no_update BEFORE UPDATE ON pipelines_auditentry"
            " BEGIN SELECT RAISE(ABORT, 'pipelines_auditentry is append-only: UPDATE refused');"
            " END",
            params=None,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("pipelines", "0015_outbox"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditentry",
            name="content_hash",
            field=models.CharField(blank=True, db_default="", default="", max_length=64),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="key_id",
            field=models.CharField(blank=True, db_default="", default="", max_length=32),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="redacted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="auditentry",
            name="hash_scheme",
            field=models.PositiveSmallIntegerField(db_default=1, default=3),
        ),
        migrations.RunPython(install, uninstall),
    ]
