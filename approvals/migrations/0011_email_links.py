"""Email and chat decision channels, and the used email action links (a tenant table under
row-level security on PostgreSQL, as orgs/migrations/0003_row_level_security.py set up)."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from orgs.policies import tenant_policy


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0010_decision_channel"),
        ("orgs", "0004_outbox_row_level_security"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="decision",
            name="channel",
            field=models.CharField(
                blank=True,
                choices=[
                    ("web", "Web"),
                    ("api", "Api"),
                    ("email", "Email"),
                    ("chat", "Chat"),
                    ("deadline", "Deadline"),
                ],
                max_length=16,
            ),
        ),
        migrations.CreateModel(
            name="EmailLinkUse",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("action", models.CharField(max_length=16)),
                ("nonce", models.CharField(max_length=32, unique=True)),
                ("used_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "organization",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="orgs.organization",
                    ),
                ),
                (
                    "task",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="approvals.humantask",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        tenant_policy("approvals_emaillinkuse"),
    ]
