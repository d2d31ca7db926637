"""Chat as a notification channel: its own events, frequency and digest time per person,
and the channel of each queued digest line."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('approvals', '0017_rollup'),
    ]

    operations = [
        migrations.AddField(
            model_name='notificationpreference',
            name='chat',
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name='notificationpreference',
            name='chat_due_soon',
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name='notificationpreference',
            name='chat_frequency',
            field=models.CharField(choices=[('immediate', 'At once'), ('hourly', 'Hourly digest'), ('daily', 'Daily digest')], default='immediate', max_length=16),
        ),
        migrations.AddField(
            model_name='notificationpreference',
            name='chat_last_digest_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='notificationpreference',
            name='chat_new_task',
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name='notificationpreference',
            name='chat_run_finished',
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name='notificationpreference',
            name='chat_task_decided',
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name='queuednotification',
            name='channel',
            field=models.CharField(default='email', max_length=16),
        ),
    ]
