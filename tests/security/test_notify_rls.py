"""The delegation, digest, reminder, comment and rollup tables are under row-level security."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

TABLES = (
    "approvals_delegation",
    "approvals_queuednotification",
    "approvals_taskreminder",
    "approvals_taskcomment",
    "approvals_taskday",
    "approvals_decisionday",
)


def test_each_new_tenant_table_has_its_policy_enforced():
    if connection.vendor != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relname = ANY(%s)",
            [list(TABLES)],
        )
        flags = {name: (on, forced) for name, on, forced in cursor.fetchall()}
        cursor.execute(
            "SELECT tablename FROM pg_policies WHERE policyname = 'firefly_tenant'"
            " AND tablename = ANY(%s)",
            [list(TABLES)],
        )
        policies = {row[0] for row in cursor.fetchall()}
    assert flags == dict.fromkeys(TABLES, (True, True))
    assert policies == set(TABLES)
