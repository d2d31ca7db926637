"""Comments on tasks (a tenant table under row-level security on PostgreSQL, as
0011_email_links.py does)."""


import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from orgs.policies import tenant_policy


class Migration(migrations.Migration):

    dependencies = [
        ('approvals', "0015_notification_preferences"),
        ('orgs', '0004_outbox_row_level_security'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='TaskComment',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('body', models.TextField()),
                ('mentions', models.JSONField(blank=True, default=list)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('author', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('organization', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='orgs.organization')),
                ('task', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='comments', to='approvals.humantask')),
            ],
            options={
                'ordering': ['task', 'created_at', 'id'],
            },
        ),
        tenant_policy("approvals_taskcomment"),
    ]
