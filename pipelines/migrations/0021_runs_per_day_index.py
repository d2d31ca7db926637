"""The index of finished runs per version carries their status and organization: the
insights count runs per day from it alone."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('orgs', '0004_outbox_row_level_security'),
        ('pipelines', '0020_retention'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='run',
            name='run_version_finished',
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('finished_at__isnull', False)), fields=['pipeline_version', 'finished_at'], include=('status', 'organization'), name='run_version_finished'),
        ),
    ]
