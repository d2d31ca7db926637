"""Per-day counts of decisions and closed tasks for the insights, filled from the rows
already there; tenant tables under row-level security (orgs/policies.py)."""

import django.db.models.deletion
from django.db import migrations, models

from orgs.policies import tenant_policy


def backfill(apps, schema_editor):
    from approvals import rollup

    names = ("HumanTask", "Decision", "TaskDay", "DecisionDay")
    rollup.rebuild(models=tuple(apps.get_model("approvals", name) for name in names))


class Migration(migrations.Migration):

    dependencies = [
        ('approvals', '0016_task_comments'),
        ('orgs', '0004_outbox_row_level_security'),
    ]

    operations = [
        migrations.CreateModel(
            name='DecisionDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('pipeline_key', models.BigIntegerField()),
                ('action', models.CharField(max_length=16)),
                ('decisions', models.PositiveIntegerField()),
                ('organization', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='orgs.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'day', 'pipeline_key', 'action'), name='decisionday_key')],
            },
        ),
        migrations.CreateModel(
            name='TaskDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('pipeline_key', models.BigIntegerField()),
                ('step_name', models.CharField(max_length=100)),
                ('user_key', models.BigIntegerField()),
                ('role_key', models.BigIntegerField()),
                ('status', models.CharField(max_length=16)),
                ('tasks', models.PositiveIntegerField()),
                ('waits', models.JSONField()),
                ('organization', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='orgs.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'day', 'pipeline_key', 'step_name', 'user_key', 'role_key', 'status'), name='taskday_key')],
            },
        ),
        tenant_policy("approvals_taskday", "approvals_decisionday"),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
