"""Fixtures for schedules: a pipeline with an input schema, an author, another organization."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from orgs.models import Membership, Organization
from pipelines import services
from schedules import services as schedules
from schedules.firing import schedules_fire
from schedules.models import Schedule

NIGHTLY: dict[str, Any] = {
    "name": "nightly",
    "description": "build, then wait for a person",
    "input_schema": {
        "type": "object",
        "required": ["target"],
        "properties": {"target": {"type": "string"}},
    },
    "steps": [
        {"name": "build", "type": "noop"},
        {
            "name": "review",
            "type": "approval",
            "after": ["build"],
            "config": {"assignee_role": "reviewers"},
        },
    ],
}


@pytest.fixture
def nightly(db: Any) -> str:
    services.pipeline_create(spec=NIGHTLY, member_role="starter")
    return "nightly"


@pytest.fixture
def author(users: dict[str, Any]) -> Any:
    """boss: an admin of the default organization (author, operates every pipeline)."""
    return users["boss"]


@pytest.fixture
def make_schedule(nightly: str, author: Any) -> Callable[..., Schedule]:
    def make(**values: Any) -> Schedule:
        values.setdefault("name", "every-minute")
        values.setdefault("inputs", {"target": "prod"})
        if "cron" not in values:
            values.setdefault("every_s", 60)
        return schedules.schedule_create(pipeline=nightly, actor=author, **values)

    return make


def fire_at(schedule: Schedule, moment: datetime | None = None) -> int:
    """Run the beat's work as if the clock read `moment` (default: the next slot)."""
    schedule.refresh_from_db()
    return schedules_fire(now=moment or schedule.next_fire_at)


def slot_later(schedule: Schedule, seconds: float = 0) -> datetime:
    schedule.refresh_from_db()
    assert schedule.next_fire_at is not None
    return schedule.next_fire_at + timedelta(seconds=seconds)


@pytest.fixture
def elsewhere(db: Any, django_user_model: Any) -> dict[str, Any]:
    """Another organization with its own admin."""
    org = Organization.objects.create(slug="elsewhere", name="Elsewhere")
    admin = django_user_model.objects.create_user("stranger", password="x")
    Membership.objects.create(user=admin, organization=org, role=Membership.Role.ADMIN)
    return {"org": org, "admin": admin}


def now() -> datetime:
    return timezone.now()
