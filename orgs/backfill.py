"""The upgrade to organizations: every earlier row goes to the default organization.

Used by the data migrations of each app (one per app, each in its own transaction), so
that an upgraded install behaves as before until its admins narrow it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings


def default_organization_id(apps: Any) -> int:
    Organization = apps.get_model("orgs", "Organization")
    slug = settings.FIREFLY_DEFAULT_ORGANIZATION
    org, _ = Organization.objects.get_or_create(
        slug=slug, defaults={"name": slug.replace("-", " ").title()}
    )
    return int(org.pk)


def fill(schema_editor: Any, apps: Any, tables: list[str]) -> None:
    """Put every row of `tables` without an organization in the default one."""
    org_id = default_organization_id(apps)
    quote = schema_editor.connection.ops.quote_name
    for table in tables:
        schema_editor.execute(
            f"UPDATE {quote(table)} SET organization_id = %s WHERE organization_id IS NULL",
            params=[org_id],
        )
