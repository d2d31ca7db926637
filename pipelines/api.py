"""REST API for pipelines, runs, checkpoints and the audit trail."""

from __future__ import annotations

import datetime
from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import Max, Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, generics, serializers, status
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from firefly_site.api_errors import AUTH_ERRORS, CONFLICT, INVALID, NOT_FOUND, error_response
from firefly_site.throttles import AuditedScopedThrottle
from pipelines import selectors, services
from pipelines.errors import SpecError
from pipelines.models import (
    AuditEntry,
    Checkpoint,
    HandoffEnvelope,
    Pipeline,
    PipelineVersion,
    Run,
    StepRun,
)
from pipelines.security import refusal_record
from pipelines.spec import load_text

# --- pagination -------------------------------------------------------------------------


class Page(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class AuditCursor(CursorPagination):
    """The audit log only grows at its head: a cursor stays stable while entries arrive."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = ("-created_at", "-id")


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
    created_at = serializers.DateTimeField()
    latest_version = serializers.IntegerField(allow_null=True)


class PipelineDetailSerializer(serializers.Serializer):
    name = serializers.CharField(source="pipeline.name")
    description = serializers.CharField(source="pipeline.description", allow_blank=True)
    created_at = serializers.DateTimeField(source="pipeline.created_at")
    version = serializers.IntegerField(source="number", help_text="The latest version.")
    spec = serializers.JSONField(help_text="The latest version's spec.")
    versions = serializers.SerializerMethodField()

    @extend_schema_field(VersionSerializer(many=True))
    def get_versions(self, version: PipelineVersion) -> Any:
        versions = version.pipeline.versions.select_related("created_by").order_by("-number")
        return VersionSerializer(versions, many=True).data


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


HANDOFF_STATUSES = ("queued", "accepted", "acknowledged")


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
        choices=HANDOFF_STATUSES,
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

    @extend_schema_field(StepSerializer(many=True))
    def get_steps(self, run: Run) -> Any:
        return StepSerializer(selectors.current_steps(run), many=True).data


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


# --- views ------------------------------------------------------------------------------


class StaffMayCreate(BasePermission):
    """Any signed-in user reads; only staff add pipeline versions (a spec names code to run)."""

    message = "Only staff may create pipelines."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in ("GET", "HEAD", "OPTIONS") or bool(user.is_staff)


class PipelineList(generics.ListAPIView):
    permission_classes = [StaffMayCreate]
    serializer_class = PipelineSerializer
    pagination_class = Page

    def get_queryset(self) -> QuerySet[Pipeline]:
        return Pipeline.objects.annotate(latest_version=Max("versions__number")).order_by("name")

    @extend_schema(
        summary="List pipelines",
        responses={200: PipelineSerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create a pipeline, or a new version of it, from a spec (staff)",
        request=PipelineCreateSerializer,
        responses={
            201: OpenApiResponse(PipelineDetailSerializer, description="A new version."),
            200: OpenApiResponse(
                PipelineDetailSerializer, description="Identical to the latest: unchanged."
            ),
            **INVALID,
            **AUTH_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        data = validated(PipelineCreateSerializer, request)
        spec = data["spec"]
        try:
            if isinstance(spec, str):
                spec = load_text(spec)
            version, created = services.pipeline_create_or_get(spec=spec, actor=request.user)
        except SpecError as exc:
            # A spec names code to run: a refused one is kept, outside the rolled-back
            # transaction, with who sent it and why it was refused.
            refusal_record(
                event="spec.refused",
                reason=exc.message[:2000],
                actor=request.user,
                address=request.META.get("REMOTE_ADDR"),
                problems=[
                    {key: None if v is None else str(v)[:500] for key, v in error.items()}
                    for error in exc.errors[:20]
                ],
            )
            raise
        # Re-read: the service updates the pipeline row (description) with a query.
        version = PipelineVersion.objects.select_related("pipeline").get(pk=version.pk)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(PipelineDetailSerializer(version).data, status=code)


class PipelineDetail(APIView):
    @extend_schema(
        summary="A pipeline's latest version, its spec and all versions",
        responses={200: PipelineDetailSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, name: str) -> Response:
        version = services.pipeline_version(name)
        return Response(PipelineDetailSerializer(version).data)


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "maxLength": 200},
    OpenApiParameter.HEADER,
    description=(
        "Retry safely: the same key from the same user for the same pipeline and the "
        "same request body returns the first run (201 again, with "
        "`Idempotent-Replayed: true`) instead of starting another. The same key with a "
        "different body is refused with 422 naming the first run."
    ),
)


class RunStart(APIView):
    throttle_classes = [AuditedScopedThrottle]
    throttle_scope = "run_start"

    @extend_schema(
        summary="Start a run",
        parameters=[IDEMPOTENCY_KEY],
        request=RunStartSerializer,
        responses={
            201: RunSerializer,
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            422: error_response("The Idempotency-Key was used with a different request."),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 200:
            raise exceptions.ValidationError({"Idempotency-Key": ["At most 200 characters."]})
        data = validated(RunStartSerializer, request)
        run, created = services.run_start_or_replay(
            pipeline=name,
            inputs=data["inputs"],
            version=data.get("version"),
            actor=request.user,
            idempotency_key=key,
        )
        headers = {"Location": f"/api/v1/runs/{run.pk}/"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED, headers=headers)


def _runs() -> QuerySet[Run]:
    return Run.objects.select_related("pipeline_version__pipeline", "created_by").order_by(
        "-created_at", "-id"
    )


class RunList(generics.ListAPIView):
    serializer_class = RunSerializer
    pagination_class = Page
    filterset_class = RunFilter

    def get_queryset(self) -> QuerySet[Run]:
        return _runs()

    @extend_schema(
        summary="Runs, newest first",
        responses={200: RunSerializer(many=True), **INVALID, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


def _handoffs() -> QuerySet[HandoffEnvelope]:
    return HandoffEnvelope.objects.select_related("acknowledged_by", "child_run").order_by("id")


def _run_details() -> QuerySet[Run]:
    """Runs with their children and envelopes: one query each, however many there are."""
    children = (
        Run.objects.select_related("pipeline_version__pipeline")
        .only("pk", "status", "parent", "pipeline_version__pipeline__name")
        .order_by("id")
    )
    return _runs().prefetch_related(
        Prefetch("children", queryset=children), Prefetch("envelopes", queryset=_handoffs())
    )


class RunDetail(APIView):
    @extend_schema(
        summary="A run with the latest attempt of each step, its children and handoffs",
        responses={200: RunDetailSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(RunDetailSerializer(get_object_or_404(_run_details(), pk=pk)).data)


def _run_detail(run: Run) -> dict[str, Any]:
    return dict(RunDetailSerializer(_run_details().get(pk=run.pk)).data)


class RunCancel(APIView):
    @extend_schema(
        summary="Cancel a run (staff or the run's starter)",
        request=None,
        responses={200: RunDetailSerializer, **AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    def post(self, request: Request, pk: int) -> Response:
        return Response(_run_detail(services.run_cancel(run_id=pk, actor=request.user)))


class RunResume(APIView):
    @extend_schema(
        summary="Resume a failed run from its last checkpoint (staff or the run's starter)",
        request=None,
        responses={200: RunDetailSerializer, **AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    def post(self, request: Request, pk: int) -> Response:
        return Response(_run_detail(services.run_resume(run_id=pk, actor=request.user)))


class RunFork(APIView):
    throttle_classes = [AuditedScopedThrottle]
    throttle_scope = "run_fork"

    @extend_schema(
        summary="Start a new run from one of this run's checkpoints",
        request=ForkSerializer,
        responses={201: RunSerializer, **INVALID, **AUTH_ERRORS, **NOT_FOUND},
    )
    def post(self, request: Request, pk: int) -> Response:
        data = validated(ForkSerializer, request)
        run = services.run_fork(run_id=pk, checkpoint_seq=data["checkpoint"], actor=request.user)
        return Response(
            RunSerializer(run).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/runs/{run.pk}/"},
        )


class HandoffDetail(APIView):
    @extend_schema(
        summary="A handoff envelope: work a run handed to a run of another pipeline",
        responses={200: HandoffSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(HandoffSerializer(get_object_or_404(_handoffs(), pk=pk)).data)


class HandoffAcknowledge(APIView):
    @extend_schema(
        summary="Acknowledge a handoff: record how it was settled (staff or the run's starter)",
        request=AcknowledgeSerializer,
        responses={
            200: HandoffSerializer,
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: error_response("The handoff was already acknowledged."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        envelope = get_object_or_404(HandoffEnvelope.objects.select_related("origin_run"), pk=pk)
        data = validated(AcknowledgeSerializer, request)
        services.acknowledge_handoff(
            envelope_id=envelope.pk, decision=data["decision"], actor=request.user
        )
        return Response(HandoffSerializer(_handoffs().get(pk=envelope.pk)).data)


class RunCheckpoints(generics.ListAPIView):
    serializer_class = CheckpointSerializer
    pagination_class = Page

    def get_queryset(self) -> QuerySet[Checkpoint]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Checkpoint.objects.none()
        run = get_object_or_404(Run.objects.only("pk"), pk=self.kwargs["pk"])
        return Checkpoint.objects.filter(run=run).order_by("seq")

    @extend_schema(
        summary="A run's checkpoints, in order",
        responses={200: CheckpointSerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class RunAudit(generics.ListAPIView):
    serializer_class = AuditEntrySerializer
    pagination_class = Page

    def get_queryset(self) -> QuerySet[AuditEntry]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return AuditEntry.objects.none()
        run = get_object_or_404(Run.objects.only("pk"), pk=self.kwargs["pk"])
        return AuditEntry.objects.filter(run=run).select_related("pipeline").order_by("seq")

    @extend_schema(
        summary="A run's audit trail, in order",
        responses={200: AuditEntrySerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class AuditList(generics.ListAPIView):
    serializer_class = AuditEntrySerializer
    filterset_class = AuditFilter
    pagination_class = AuditCursor

    def get_queryset(self) -> QuerySet[AuditEntry]:
        return AuditEntry.objects.select_related("pipeline")

    @extend_schema(
        summary="The audit log, newest first (cursor pagination)",
        responses={
            200: AuditEntrySerializer(many=True),
            **INVALID,
            **AUTH_ERRORS,
            404: OpenApiResponse(
                NOT_FOUND[404].response, description="The cursor is not one this API gave out."
            ),
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


@extend_schema(exclude=True)
class NoSuchEndpoint(APIView):
    """Unknown paths under /api/ answer in the API's error shape, not Django's HTML page."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        raise exceptions.NotFound(f"No API endpoint {request.path}.")


def validated(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
