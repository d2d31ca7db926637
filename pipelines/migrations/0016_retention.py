"""Retention: a run's redaction time, and audit entries that keep a purged run's id.

The audit entry's run key loses its database constraint (a purged run's entries stay).
SQLite rebuilds the table to do that, which drops its append-only triggers: they are
installed again (pipelines 0014).
"""

import django.db.models.deletion
from django.conf import settings
import importlib

from django.db import migrations, models

# The triggers as 0014 installs them (IF NOT EXISTS: a no-op where they survived).
append_only = importlib.import_module("pipelines.migrations.0014_sqlite_append_only")


class Migration(migrations.Migration):

    dependencies = [
        ('orgs', '0004_outbox_row_level_security'),
        ('pipelines', '0015_outbox'),
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
        migrations.RunPython(append_only.install, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('finished_at__isnull', False)), fields=['pipeline_version', 'finished_at'], name='run_version_finished'),
        ),
    ]
