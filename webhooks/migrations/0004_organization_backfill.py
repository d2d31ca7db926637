"""Earlier rows belong to the default organization."""

from django.db import migrations

from orgs.backfill import fill


def forward(apps, schema_editor):
    fill(schema_editor, apps, ["approvals_webhook", "approvals_webhookdelivery"])


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0003_organizations"), ("orgs", "0002_default_organization")]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
