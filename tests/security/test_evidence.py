"""Attack: erase the record of a refusal."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from pipelines.models import SecurityEvent
from pipelines.security import refusal_record


def test_security_events_cannot_be_changed_or_deleted(users):
    event = refusal_record(event="api.forbidden", reason="staff only", actor=users["outsider"])
    with pytest.raises(TypeError):
        event.delete()
    with pytest.raises(TypeError):
        SecurityEvent.objects.filter(pk=event.pk).update(reason="nothing happened")
    # Below the ORM, the database itself refuses.
    for sql in (
        "UPDATE pipelines_securityevent SET reason = 'nothing happened' WHERE id = %s",
        "DELETE FROM pipelines_securityevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            connection.cursor().execute(sql, [event.pk])
    assert SecurityEvent.objects.get(pk=event.pk).reason == "staff only"
