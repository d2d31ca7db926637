"""API filters of runs and of the audit log."""

from __future__ import annotations

import datetime
from typing import Any

import django_filters
from django.core.exceptions import ValidationError

from pipelines.models import AuditEntry, Run

# --- filters ----------------------------------------------------------------------------


class RunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Run.Status.choices)
    pipeline = django_filters.CharFilter(
        field_name="pipeline_version__pipeline__name", help_text="A pipeline name."
    )

    class Meta:
        model = Run
        fields = ["status", "pipeline"]


class UtcDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 time, turned into UTC: PostgreSQL refuses offsets beyond ±15:59, which
    ISO 8601 (and Python) allow."""

    def to_python(self, value: Any) -> Any:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(datetime.UTC)
        except OverflowError:
            raise ValidationError(
                "Enter a time between the years 1 and 9999 in UTC.", code="invalid"
            ) from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class AuditFilter(django_filters.FilterSet):
    run = django_filters.NumberFilter(field_name="run_id", help_text="A run id.")
    event = django_filters.CharFilter(help_text="An event such as task.approved.")
    actor = django_filters.CharFilter(field_name="actor_name", help_text="A username or system.")
    since = UtcDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="Entries at or after this time."
    )

    class Meta:
        model = AuditEntry
        fields = ["run", "event", "actor", "since"]
