"""REST API for pipelines, runs, checkpoints and the audit trail."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import exceptions, generics, serializers, status
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from firefly_site.api_errors import (
    AUTH_ERRORS,
    CONFLICT,
    INVALID,
    NOT_FOUND,
    THROTTLED,
    error_response,
)
from firefly_site.throttles import AuditedScopedThrottle
from pipelines import selectors, services
from pipelines.errors import SpecError
from pipelines.filters import AuditFilter, RunFilter
from pipelines.models import (
    AuditEntry,
    Checkpoint,
    Pipeline,
    Run,
)
from pipelines.security import refusal_record
from pipelines.serializers import (
    AcknowledgeSerializer,
    AuditEntrySerializer,
    CheckpointSerializer,
    ForkSerializer,
    HandoffSerializer,
    PipelineCreateSerializer,
    PipelineDetailSerializer,
    PipelineSerializer,
    RunDetailSerializer,
    RunSerializer,
    RunStartSerializer,
)
from pipelines.spec_text import load_text

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


# --- views ------------------------------------------------------------------------------


def organization_or_404(request: Request) -> Any:
    """The organization the request acts in; a user of none finds nothing to act on."""
    if request.organization is None:
        raise exceptions.NotFound("You belong to no organization.")
    return request.organization


def visible_run(request: Request, pk: int) -> Run:
    """The run, if the user may see it in the request's organization; else 404."""
    return get_object_or_404(selectors.run_keys(request.user, request.organization), pk=pk)


class PipelineList(generics.ListAPIView):
    queryset = Pipeline.objects.none()  # for the schema; get_queryset scopes every request
    serializer_class = PipelineSerializer
    pagination_class = Page

    def get_queryset(self) -> QuerySet[Pipeline]:
        return selectors.pipelines_with_latest_version(self.request.user, self.request.organization)

    @extend_schema(
        summary="List pipelines",
        responses={200: PipelineSerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create a pipeline, or a new version of it, from a spec (authors)",
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
            version, created = services.pipeline_create_or_get(
                spec=spec,
                actor=request.user,
                organization=organization_or_404(request),
                member_role=data.get("member_role") or None,
            )
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
        version = selectors.version_with_pipeline(version.pk)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(PipelineDetailSerializer(version).data, status=code)


class PipelineDetail(APIView):
    @extend_schema(
        summary="A pipeline's latest version, its spec and all versions",
        responses={200: PipelineDetailSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, name: str) -> Response:
        pipeline = selectors.pipeline_by_name(request.user, request.organization, name)
        if pipeline is None:
            raise exceptions.NotFound(f"No pipeline {name!r}.")
        version = services.pipeline_version(name, organization=pipeline.organization_id)
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
            **THROTTLED,
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
            organization=organization_or_404(request),
        )
        headers = {"Location": reverse("api:run", args=[run.pk])}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED, headers=headers)


class RunList(generics.ListAPIView):
    queryset = Run.objects.none()  # for the schema; get_queryset scopes every request
    serializer_class = RunSerializer
    pagination_class = Page
    filterset_class = RunFilter

    def get_queryset(self) -> QuerySet[Run]:
        return selectors.runs(self.request.user, self.request.organization)

    @extend_schema(
        summary="Runs, newest first",
        responses={200: RunSerializer(many=True), **INVALID, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class RunDetail(APIView):
    @extend_schema(
        summary="A run with the latest attempt of each step, its children and handoffs",
        responses={200: RunDetailSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, pk: int) -> Response:
        found = selectors.run_details(request.user, request.organization)
        return Response(RunDetailSerializer(get_object_or_404(found, pk=pk)).data)


def _run_detail(request: Request, run: Run) -> dict[str, Any]:
    found = selectors.run_details(request.user, request.organization)
    return dict(RunDetailSerializer(found.get(pk=run.pk)).data)


class RunCancel(APIView):
    @extend_schema(
        summary="Cancel a run (operators or the run's starter)",
        request=None,
        responses={200: RunDetailSerializer, **AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    def post(self, request: Request, pk: int) -> Response:
        visible_run(request, pk)
        return Response(_run_detail(request, services.run_cancel(run_id=pk, actor=request.user)))


class RunResume(APIView):
    @extend_schema(
        summary="Resume a failed run from its last checkpoint (operators or the run's starter)",
        request=None,
        responses={200: RunDetailSerializer, **AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    def post(self, request: Request, pk: int) -> Response:
        visible_run(request, pk)
        return Response(_run_detail(request, services.run_resume(run_id=pk, actor=request.user)))


class RunFork(APIView):
    throttle_classes = [AuditedScopedThrottle]
    throttle_scope = "run_fork"

    @extend_schema(
        summary="Start a new run from one of this run's checkpoints",
        request=ForkSerializer,
        responses={201: RunSerializer, **INVALID, **AUTH_ERRORS, **NOT_FOUND, **THROTTLED},
    )
    def post(self, request: Request, pk: int) -> Response:
        visible_run(request, pk)
        data = validated(ForkSerializer, request)
        run = services.run_fork(run_id=pk, checkpoint_seq=data["checkpoint"], actor=request.user)
        return Response(
            RunSerializer(run).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("api:run", args=[run.pk])},
        )


class HandoffDetail(APIView):
    @extend_schema(
        summary="A handoff envelope: work a run handed to a run of another pipeline",
        responses={200: HandoffSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, pk: int) -> Response:
        found = selectors.handoffs(request.user, request.organization)
        return Response(HandoffSerializer(get_object_or_404(found, pk=pk)).data)


class HandoffAcknowledge(APIView):
    @extend_schema(
        summary="Acknowledge a handoff: record how it was settled (operators or the run's starter)",
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
        envelope = get_object_or_404(selectors.handoffs(request.user, request.organization), pk=pk)
        data = validated(AcknowledgeSerializer, request)
        services.acknowledge_handoff(
            envelope_id=envelope.pk, decision=data["decision"], actor=request.user
        )
        return Response(HandoffSerializer(selectors.all_handoffs().get(pk=envelope.pk)).data)


class RunCheckpoints(generics.ListAPIView):
    serializer_class = CheckpointSerializer
    pagination_class = Page

    def get_queryset(self) -> QuerySet[Checkpoint]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Checkpoint.objects.none()
        run = visible_run(self.request, self.kwargs["pk"])
        return selectors.run_checkpoints(run, newest_first=False)

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
        run = visible_run(self.request, self.kwargs["pk"])
        return selectors.run_audit_in_order(run)

    @extend_schema(
        summary="A run's audit trail, in order",
        responses={200: AuditEntrySerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class AuditList(generics.ListAPIView):
    queryset = AuditEntry.objects.none()  # for the schema; get_queryset scopes every request
    serializer_class = AuditEntrySerializer
    filterset_class = AuditFilter
    pagination_class = AuditCursor

    def get_queryset(self) -> QuerySet[AuditEntry]:
        return selectors.audit_entries(self.request.user, self.request.organization)

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
