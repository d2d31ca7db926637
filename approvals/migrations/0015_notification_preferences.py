"""Notification preferences, digests' queue and sent deadline reminders (the last two are
tenant tables under row-level security on PostgreSQL, as 0011_email_links.py does)."""


import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from orgs.policies import tenant_policy


class Migration(migrations.Migration):

    dependencies = [
        ('approvals', "0014_delegation"),
        ('orgs', '0004_outbox_row_level_security'),
        ('pipelines', '0020_retention'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='humantask',
            name='remind_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name='NotificationPreference',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('email', models.BooleanField(default=True)),
                ('new_task', models.BooleanField(default=True)),
                ('due_soon', models.BooleanField(default=True)),
                ('task_decided', models.BooleanField(default=True)),
                ('run_finished', models.BooleanField(default=True)),
                ('frequency', models.CharField(choices=[('immediate', 'At once'), ('hourly', 'Hourly digest'), ('daily', 'Daily digest')], default='immediate', max_length=16)),
                ('last_digest_at', models.DateTimeField(blank=True, null=True)),
                ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.CreateModel(
            name='TaskReminder',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('sent_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('organization', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='orgs.organization')),
                ('task', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='approvals.humantask')),
            ],
        ),
        migrations.CreateModel(
            name='QueuedNotification',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event', models.CharField(max_length=32)),
                ('text', models.CharField(max_length=300)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('sent_at', models.DateTimeField(blank=True, null=True)),
                ('organization', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='orgs.organization')),
                ('run', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, to='pipelines.run')),
                ('task', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, to='approvals.humantask')),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'indexes': [models.Index(fields=['sent_at', 'user'], name='queued_unsent')],
            },
        ),
        tenant_policy("approvals_queuednotification", "approvals_taskreminder"),
    ]
