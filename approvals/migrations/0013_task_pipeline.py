import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_pipelines(apps, schema_editor):
    """Each existing task gets its run's pipeline, in one UPDATE."""
    HumanTask = apps.get_model("approvals", "HumanTask")
    Run = apps.get_model("pipelines", "Run")
    pipeline = Run.objects.filter(pk=OuterRef("run_id")).values("pipeline_version__pipeline_id")[:1]
    HumanTask.objects.filter(pipeline__isnull=True).update(pipeline_id=Subquery(pipeline))


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0012_insights_indexes"),
        ("pipelines", "0020_retention"),
    ]

    operations = [
        migrations.AddField(
            model_name="humantask",
            name="pipeline",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="pipelines.pipeline",
            ),
        ),
        migrations.RunPython(fill_pipelines, migrations.RunPython.noop),
    ]
