"""The default organization, with every existing user in it: staff and superusers as
its admins (they managed everything before), everyone else as members."""

from django.conf import settings
from django.db import migrations

from orgs.backfill import default_organization_id


def forward(apps, schema_editor):
    org_id = default_organization_id(apps)
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    Membership = apps.get_model("orgs", "Membership")
    Membership.objects.bulk_create(
        [
            Membership(
                user_id=user.pk,
                organization_id=org_id,
                role="admin" if user.is_staff or user.is_superuser else "member",
            )
            for user in User.objects.all()
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("orgs", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
