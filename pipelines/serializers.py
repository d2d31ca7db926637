"""API serializers of pipelines, runs, handoffs, checkpoints and audit entries."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pipelines import selectors, services
from pipelines.models import (
    Checkpoint,
    HandoffEnvelope,
    PipelineRole,
    PipelineVersion,
    Run,
    StepRun,
)

# --- input hygiene ----------------------------------------------------------------------


def clean_json(value: Any, where: str = "") -> Any:
    """Refuse strings PostgreSQL cannot store (NUL, lone surrogates) anywhere in a JSON value."""
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError(
                f"{where or 'value'}: NUL characters are not allowed."
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise serializers.ValidationError(
                f"{where or 'value'}: not valid Unicode (lone surrogate)."
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            clean_json(key, where)
            clean_json(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            clean_json(item, f"{where}[{index}]")
    return value


class CleanJSONField(serializers.JSONField):
    def to_internal_value(self, data: Any) -> Any:
        return clean_json(super().to_internal_value(data))


@extend_schema_field({"type": "object", "additionalProperties": True})
class CleanObjectField(CleanJSONField):
    """A JSON object (any keys and values)."""

    default_error_messages = {"not_object": "Expected a JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            self.fail("not_object")
        return super().to_internal_value(data)


# --- serializers ------------------------------------------------------------------------


class VersionSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True)


class PipelineSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    member_role = serializers.CharField(
        allow_blank=True, help_text="The role every member has on it; blank: grants only."
    )
    created_at = serializers.DateTimeField()
    latest_version = serializers.IntegerField(allow_null=True)


class PipelineDetailSerializer(serializers.Serializer):
    name = serializers.CharField(source="pipeline.name")
    description = serializers.CharField(source="pipeline.description", allow_blank=True)
    member_role = serializers.CharField(source="pipeline.member_role", allow_blank=True)
    created_at = serializers.DateTimeField(source="pipeline.created_at")
    version = serializers.IntegerField(source="number", help_text="The latest version.")
    spec = serializers.JSONField(help_text="The latest version's spec.")
    versions = serializers.SerializerMethodField()

    @extend_schema_field(VersionSerializer(many=True))
    def get_versions(self, version: PipelineVersion) -> Any:
        return VersionSerializer(selectors.pipeline_versions(version.pipeline), many=True).data


@extend_schema_field(
    {
        "oneOf": [{"type": "object", "additionalProperties": True}, {"type": "string"}],
        "description": "The spec as a JSON object, or as YAML/JSON text.",
    }
)
class SpecField(CleanJSONField):
    pass


class PipelineCreateSerializer(serializers.Serializer):
    spec = SpecField()
    member_role = serializers.ChoiceField(
        choices=["", *PipelineRole.values],
        required=False,
        allow_blank=True,
        help_text=(
            "A new pipeline only: the role every member of the organization gets on it. "
            "Left out or blank, it is seen only by you, its grants and the organization's "
            "admins. Ignored for a new version (admins change it)."
        ),
    )


class RunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    pipeline = serializers.CharField(source="pipeline_version.pipeline.name")
    version = serializers.IntegerField(source="pipeline_version.number")
    status = serializers.ChoiceField(choices=Run.Status.choices)
    inputs = serializers.JSONField()
    output = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    created_by = serializers.CharField(source="created_by.username", allow_null=True)
    generation = serializers.IntegerField()
    forked_from = serializers.IntegerField(source="forked_from_id", allow_null=True)
    forked_from_seq = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class StepSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField(source="step_name")
    status = serializers.ChoiceField(choices=StepRun.Status.choices)
    generation = serializers.IntegerField()
    attempt = serializers.IntegerField()
    outputs = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    queued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True)


class RunLinkSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    pipeline = serializers.CharField(source="pipeline_version.pipeline.name")
    status = serializers.ChoiceField(choices=Run.Status.choices)


class HandoffSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    origin_run = serializers.IntegerField(
        source="origin_run_id", help_text="The run that handed off."
    )
    origin_step = serializers.CharField(
        allow_blank=True, help_text="The step that handed off; blank when on_finish did."
    )
    target_pipeline = serializers.CharField(help_text="The pipeline whose run takes the work.")
    payload = CleanObjectField(help_text="The child run's inputs.")
    wait = serializers.BooleanField(help_text="Whether the origin step waits for the child run.")
    child_run = serializers.IntegerField(
        source="child_run_id", allow_null=True, help_text="The run started for it, once started."
    )
    status = serializers.ChoiceField(
        choices=HandoffEnvelope.Status.values,
        help_text="accepted: the child run started; acknowledged: settled.",
    )
    queued_at = serializers.DateTimeField()
    accepted_at = serializers.DateTimeField(allow_null=True)
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username",
        allow_null=True,
        help_text="Null when nobody did, or when the waiting step settled it.",
    )
    decision = serializers.JSONField(allow_null=True, help_text="A string or a JSON object.")


class UnsettledSerializer(serializers.Serializer):
    summary = serializers.CharField(help_text='Such as "1 open task, 2 steps in flight".')
    counts = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="How many of each kind: open_tasks, unacknowledged_handoffs, "
        "steps_in_flight, queued_webhook_deliveries (and any kind an app adds).",
    )
    items = serializers.DictField(
        child=serializers.ListField(child=serializers.DictField()),
        help_text="Each kind's items: ids and what names them (step, status, pipeline, ...).",
    )


class RunDetailSerializer(RunSerializer):
    steps = serializers.SerializerMethodField(help_text="The latest attempt of each step.")
    parent_run = serializers.IntegerField(
        source="parent_id", allow_null=True, help_text="The run whose handoff started this one."
    )
    children = RunLinkSerializer(many=True, help_text="Runs this run's handoffs started.")
    envelopes = HandoffSerializer(many=True, help_text="Work this run handed off, in order.")
    disposition = serializers.JSONField(
        allow_null=True, help_text="What the pipeline's on_finish recorded."
    )
    finishing = serializers.BooleanField(
        source="is_finishing", help_text="Whether on_finish is running (the run is not over)."
    )
    trace_id = serializers.CharField(allow_blank=True)
    unsettled = serializers.SerializerMethodField(
        help_text="The run's work not settled yet, at any time (not only during on_finish)."
    )

    @extend_schema_field(StepSerializer(many=True))
    def get_steps(self, run: Run) -> Any:
        return StepSerializer(selectors.current_steps(run), many=True).data

    @extend_schema_field(UnsettledSerializer)
    def get_unsettled(self, run: Run) -> Any:
        # One query per kind, however many items each has.
        found = services.unsettled(run.pk)
        return UnsettledSerializer(
            {"summary": found.summary, "counts": found.counts, "items": found.items}
        ).data


@extend_schema_field(
    {
        "oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": True}],
        "description": "How the handoff was settled: text, or a JSON object.",
    }
)
class DecisionField(CleanJSONField):
    """A string or a JSON object; whether it says enough is the service's rule."""

    default_error_messages = {"not_decision": "Expected a string or a JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str | dict):
            self.fail("not_decision")
        return super().to_internal_value(data)


class AcknowledgeSerializer(serializers.Serializer):
    decision = DecisionField()


class RunStartSerializer(serializers.Serializer):
    inputs = CleanObjectField(required=False, default=dict)
    version = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=2**31 - 1,
        help_text="A version number; the latest when left out.",
    )


class ForkSerializer(serializers.Serializer):
    checkpoint = serializers.IntegerField(min_value=1, max_value=2**31 - 1)


class CheckpointSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Checkpoint.Kind.choices)
    step_name = serializers.CharField(allow_blank=True)
    generation = serializers.IntegerField()
    step_run = serializers.IntegerField(source="step_run_id", allow_null=True)
    status = serializers.CharField(allow_blank=True)
    paused = serializers.BooleanField()
    pause_reason = serializers.CharField(allow_blank=True)
    data = serializers.JSONField(allow_null=True)
    created_at = serializers.DateTimeField()


class AuditEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    run = serializers.IntegerField(source="run_id", allow_null=True)
    pipeline = serializers.CharField(source="pipeline.name")
    seq = serializers.IntegerField()
    event = serializers.CharField()
    step_name = serializers.CharField(allow_blank=True)
    actor = serializers.CharField(source="actor_name")
    status = serializers.CharField(allow_blank=True)
    inputs = serializers.JSONField(allow_null=True)
    outputs = serializers.JSONField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    error_message = serializers.CharField(allow_blank=True)
    pause_reason = serializers.CharField(allow_blank=True)
    data = serializers.JSONField(allow_null=True)
    created_at = serializers.DateTimeField()
    prev_hash = serializers.CharField(allow_blank=True)
    hash = serializers.CharField()
