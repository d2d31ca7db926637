# Keys of rest_framework.authtoken (plaintext in `authtoken_token`) become ApiTokens named
# "migrated": their hash is stored, and the plaintext rows are deleted, so integrations
# keep working and the database no longer holds a usable key. The table is read with SQL,
# not through the authtoken app (no longer installed); it is emptied, not dropped, so an
# older release that expects it still starts. Migrated tokens expire after
# FIREFLY_TOKEN_TTL_DAYS from this migration, like any new token.

import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone

from orgs.backfill import default_organization_id

TABLE = "authtoken_token"


def carry_over(apps, schema_editor):
    connection = schema_editor.connection
    if TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("tokens", "ApiToken")
    expires_at = timezone.now() + timedelta(days=settings.FIREFLY_TOKEN_TTL_DAYS)
    # Run against a schema with organizations (a database upgraded in one step is
    # migrated before they exist; the carried-over keys then join the default one).
    fields = {field.name for field in ApiToken._meta.fields}
    extra = {"organization_id": default_organization_id(apps)} if "organization" in fields else {}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {TABLE}")
        rows = cursor.fetchall()
        ApiToken.objects.using(connection.alias).bulk_create(
            ApiToken(
                user_id=user_id,
                name="migrated",
                # As tokens.models.token_prefix finds a legacy key.
                prefix="drf-" + key[:12],
                secret_hash=hashlib.sha256(key.encode()).hexdigest(),
                created_at=created,
                expires_at=expires_at,
                **extra,
            )
            for key, user_id, created in rows
        )
        cursor.execute(f"DELETE FROM {TABLE}")


class Migration(migrations.Migration):
    dependencies = [("tokens", "0001_initial")]

    operations = [migrations.RunPython(carry_over, migrations.RunPython.noop)]
