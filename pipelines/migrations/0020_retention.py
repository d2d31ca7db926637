"""Retention: a run's redaction time, and audit entries that keep a purged run's id.

The audit entry's run key loses its database constraint (a purged run's entries stay).
SQLite rebuilds the table to do that, which drops its append-only triggers: they are
installed again, as pipelines 0016 left them (redaction the only UPDATE let through).
"""

import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

redaction_only = importlib.import_module("pipelines.migrations.0016_audit_key_ids_and_redaction")


def sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        redaction_only.install(apps, schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ('orgs', '0004_outbox_row_level_security'),
        ('pipelines', '0019_heartbeat'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='run',
            name='redacted_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='auditentry',
            name='run',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='pipelines.run'),
        ),
        migrations.RunPython(sqlite_triggers, sqlite_triggers),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('finished_at__isnull', False)), fields=['pipeline_version', 'finished_at'], name='run_version_finished'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('finished_at__isnull', False), ('redacted_at__isnull', True)), fields=['pipeline_version', 'finished_at'], name='run_version_unerased'),
        ),
        migrations.AddIndex(
            model_name='checkpoint',
            index=models.Index(fields=['step_run'], name='checkpoint_step_run'),
        ),
    ]
