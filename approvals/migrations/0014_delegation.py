"""Out-of-office delegation, and who a delegate decided for (a tenant table under row-level
security on PostgreSQL, as orgs/migrations/0003_row_level_security.py set up)."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from orgs.policies import tenant_policy


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0013_task_pipeline"),
        ("orgs", "0004_outbox_row_level_security"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="decision",
            name="on_behalf_of",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.CreateModel(
            name="Delegation",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("starts_at", models.DateTimeField()),
                ("ends_at", models.DateTimeField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "delegate",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
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
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["organization", "delegate", "ends_at"], name="delegation_delegate"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("organization", "user"), name="delegation_one_per_user"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("ends_at__gt", models.F("starts_at"))),
                        name="delegation_ends_after_start",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("user", models.F("delegate")), _negated=True),
                        name="delegation_not_to_self",
                    ),
                ],
            },
        ),
        tenant_policy("approvals_delegation"),
    ]
