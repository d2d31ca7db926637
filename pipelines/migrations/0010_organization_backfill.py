"""Earlier pipelines, runs and their history belong to the default organization; earlier
pipelines stay open to every member (as starters), as they were to every user."""

from django.db import migrations

from orgs.backfill import default_organization_id, fill

TABLES = [
    "pipelines_pipeline",
    "pipelines_pipelineversion",
    "pipelines_run",
    "pipelines_steprun",
    "pipelines_checkpoint",
    "pipelines_handoffenvelope",
]


def forward(apps, schema_editor):
    fill(schema_editor, apps, TABLES)
    postgres = schema_editor.connection.vendor == "postgresql"
    # Audit entries are append-only (a trigger refuses UPDATE): setting their new column
    # is the one change made to them, with the trigger off inside this transaction.
    if postgres:
        schema_editor.execute(
            "ALTER TABLE pipelines_auditentry DISABLE TRIGGER auditentry_append_only"
        )
    fill(schema_editor, apps, ["pipelines_auditentry"])
    if postgres:
        schema_editor.execute(
            "ALTER TABLE pipelines_auditentry ENABLE TRIGGER auditentry_append_only"
        )
    Pipeline = apps.get_model("pipelines", "Pipeline")
    Pipeline.objects.filter(member_role="").update(member_role="starter")
    PipelineVersion = apps.get_model("pipelines", "PipelineVersion")
    for pipeline in Pipeline.objects.filter(created_by__isnull=True):
        first = PipelineVersion.objects.filter(pipeline=pipeline).order_by("number").first()
        if first is not None and first.created_by_id is not None:
            Pipeline.objects.filter(pk=pipeline.pk).update(created_by_id=first.created_by_id)
    default_organization_id(apps)


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0009_organizations"), ("orgs", "0002_default_organization")]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
