"""Row-level security holds schedules and their firings to their organization too."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from orgs import rls
from orgs.models import Membership, Organization
from pipelines import services
from schedules import services as schedules
from schedules.firing import schedules_fire
from schedules.models import Firing, Schedule


def side(slug: str, django_user_model: Any) -> Organization:
    org = Organization.objects.create(slug=slug, name=slug.title())
    user = django_user_model.objects.create_user(f"{slug}-admin", password="x")
    Membership.objects.create(user=user, organization=org, role=Membership.Role.ADMIN)
    services.pipeline_create(
        spec={"name": "payroll", "steps": [{"name": "a", "type": "noop"}]},
        organization=org,
        actor=user,
    )
    schedule = schedules.schedule_create(
        pipeline="payroll", actor=user, organization=org, name="nightly", every_s=60
    )
    schedules_fire(now=schedule.next_fire_at)
    return org


def test_a_raw_query_sees_and_writes_only_its_organizations_schedules(db, django_user_model):
    a, b = side("acme", django_user_model), side("globex", django_user_model)
    assert Firing.objects.filter(organization=b, run__isnull=False).exists()
    b_schedule = Schedule.objects.get(organization=b)
    with rls.scoped(a.pk), connection.cursor() as cursor:
        for table in ("schedules_schedule", "schedules_firing"):
            cursor.execute(f"SELECT DISTINCT organization_id FROM {table}")
            assert [row[0] for row in cursor.fetchall()] == [a.pk], table
        cursor.execute("UPDATE schedules_schedule SET enabled = false")
        insert = (
            "INSERT INTO schedules_firing (organization_id, schedule_id, slot_at, status,"
            " reason, missed, detail, created_at) VALUES (%s, %s, now(), 'skipped', '', 0,"
            " '', now())"
        )
        cursor.execute(insert, [a.pk, Schedule.objects.get(organization=a).pk])  # its own
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            cursor.execute(insert, [b.pk, b_schedule.pk])
    assert Schedule.objects.get(organization=b).enabled is True
    assert Schedule.objects.get(organization=a).enabled is False
