"""Audit entries name the scheme their hash was computed with; existing rows are scheme 1.

The column's database default (1) marks every row written before it, without updating
any (PostgreSQL adds a column with a constant default without rewriting rows, so the
append-only trigger is not involved); the chain sets the current scheme on new rows.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0012_idempotency_key_per_organization")]

    operations = [
        migrations.AddField(
            model_name="auditentry",
            name="hash_scheme",
            field=models.PositiveSmallIntegerField(db_default=1, default=2),
        ),
    ]
