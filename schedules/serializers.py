"""API serializers of schedules: the shape of a request (checked again by the service)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pipelines.serializers import CleanObjectField
from pipelines.spec_schedules import EVERY_MAX_S, MISSED, OVERLAP
from schedules.models import Schedule


class ScheduleSerializer(serializers.ModelSerializer):
    """A schedule with its next slot and the last run it started."""

    pipeline = serializers.CharField(source="pipeline.name", read_only=True)
    next_fire_at = serializers.SerializerMethodField(
        help_text="When it fires next (UTC); null while paused."
    )
    last_run = serializers.SerializerMethodField(
        help_text="The last run a firing of this schedule started: {id, status, fired_at}."
    )
    inputs = CleanObjectField(help_text="The inputs each run gets.")

    class Meta:
        model = Schedule
        fields = (
            "id",
            "pipeline",
            "name",
            "cron",
            "timezone",
            "every_s",
            "inputs",
            "enabled",
            "overlap",
            "missed",
            "origin",
            "next_fire_at",
            "last_run",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    @extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
    def get_next_fire_at(self, schedule: Schedule) -> str | None:
        if not schedule.enabled or schedule.next_fire_at is None:
            return None
        return schedule.next_fire_at.isoformat().replace("+00:00", "Z")

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "id": {"type": "integer"},
                "status": {"type": "string"},
                "fired_at": {"type": "string", "format": "date-time", "nullable": True},
            },
        }
    )
    def get_last_run(self, schedule: Schedule) -> dict[str, Any] | None:
        run_id = getattr(schedule, "last_run_id", None)
        if run_id is None:
            return None
        fired = getattr(schedule, "last_fired_at", None)
        return {
            "id": run_id,
            "status": getattr(schedule, "last_run_status", None),
            "fired_at": fired.isoformat().replace("+00:00", "Z") if fired else None,
        }


class ScheduleWriteSerializer(serializers.Serializer):
    """What a create (all of it, `name` and a timing required) or a change (any of it) sends."""

    name = serializers.CharField(max_length=100)
    cron = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Five fields (minute hour day-of-month month day-of-week) or @daily etc.",
    )
    timezone = serializers.CharField(
        max_length=64, required=False, help_text="IANA name for `cron` (default UTC)."
    )
    every_s = serializers.IntegerField(
        min_value=1,
        max_value=EVERY_MAX_S,
        required=False,
        allow_null=True,
        help_text="An interval in seconds, instead of `cron`.",
    )
    inputs = CleanObjectField(required=False, help_text="Checked against the input_schema.")
    enabled = serializers.BooleanField(required=False, help_text="false: paused.")
    overlap = serializers.ChoiceField(
        choices=list(OVERLAP),
        required=False,
        help_text="When the schedule's previous run is still going (default skip).",
    )
    missed = serializers.ChoiceField(
        choices=list(MISSED),
        required=False,
        help_text="Slots missed while nothing fired them (default skip_missed).",
    )
