"""REST API of a pipeline's inbound hooks: list, create, retrieve, delete, rotate the
secret. The organization's admins only; the secret is in the create and rotate answers
and nowhere else."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from firefly_site.api_errors import AUTH_ERRORS, INVALID, NOT_FOUND
from inbound import selectors, services
from inbound.models import InboundHook
from orgs.api import InOrganization
from pipelines import selectors as pipelines


def _address(request: Request) -> str | None:
    return request.META.get("REMOTE_ADDR")


class InboundHookSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="Where the sender posts its deliveries.")
    pipeline = serializers.SlugRelatedField(slug_field="name", read_only=True)
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    input_mapping = serializers.DictField(
        child=serializers.CharField(max_length=500),
        required=False,
        help_text="{input name: JMESPath expression over the JSON body}; empty: the body "
        "itself is the inputs.",
    )
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        min_length=16,
        max_length=128,
        help_text="The shared secret; generated when left out. Shown only in this response.",
    )

    class Meta:
        model = InboundHook
        fields = (
            "id",
            "name",
            "url",
            "pipeline",
            "signature_format",
            "signature_header",
            "replay_window_s",
            "max_body_bytes",
            "input_mapping",
            "delivery_id_header",
            "delivery_id_path",
            "rate_limit",
            "enabled",
            "secret",
            "created_at",
            "created_by",
        )
        read_only_fields = ("id", "url", "pipeline", "created_at", "created_by")
        # The service checks these (one error shape); the serializer only types them.
        extra_kwargs: dict[str, dict[str, Any]] = {
            "name": {"validators": []},
            "signature_header": {"validators": []},
            "delivery_id_header": {"validators": []},
            "delivery_id_path": {"validators": []},
            "rate_limit": {"validators": []},
            "max_body_bytes": {"validators": []},
        }

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: InboundHook) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(obj.path) if request is not None else obj.path


class InboundHookCreatedSerializer(InboundHookSerializer):
    secret = serializers.CharField(
        source="new_secret", read_only=True, help_text="Keep it: it is not shown again."
    )


class HookListCreate(generics.ListAPIView):
    """A pipeline's inbound hooks (its organization's admins)."""

    permission_classes = (InOrganization,)
    queryset = InboundHook.objects.none()  # for the schema; get_queryset scopes each request
    serializer_class = InboundHookSerializer

    def get_queryset(self) -> QuerySet[InboundHook]:
        return selectors.hooks_of(self.request.user, self.request.organization, self.kwargs["name"])

    @extend_schema(
        summary="A pipeline's inbound hooks (organization admins; others see none)",
        responses={200: InboundHookSerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        visible_pipeline(request, kwargs["name"])
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Add an inbound hook to a pipeline (organization admins)",
        request=InboundHookSerializer,
        responses={201: InboundHookCreatedSerializer, **INVALID, **AUTH_ERRORS, **NOT_FOUND},
    )
    def post(self, request: Request, name: str) -> Response:
        visible_pipeline(request, name)
        serializer = InboundHookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        hook = services.hook_create(
            pipeline=name,
            actor=request.user,
            organization=request.organization,
            address=_address(request),
            **serializer.validated_data,
        )
        data = InboundHookCreatedSerializer(hook, context={"request": request}).data
        return Response(data, status=status.HTTP_201_CREATED)


def visible_pipeline(request: Request, name: str) -> None:
    """A pipeline the user may not see, or of another organization, is not there."""
    if pipelines.pipeline_by_name(request.user, request.organization, name) is None:
        raise NotFound(f"No pipeline {name!r}.")


def _hook(request: Request, name: str, pk: int) -> InboundHook:
    return get_object_or_404(selectors.hooks_of(request.user, request.organization, name), pk=pk)


def _hook_to_change(request: Request, name: str, pk: int) -> InboundHook:
    """The hook in the request's organization; whether the user may change it is the
    service's to decide (and to record when refused)."""
    organization = request.organization
    if organization is None:
        raise NotFound("You belong to no organization.")
    found = InboundHook.objects.filter(organization_id=organization.pk, pipeline__name=name)
    return get_object_or_404(found, pk=pk)


class HookDetail(APIView):
    permission_classes = (InOrganization,)

    @extend_schema(
        summary="One inbound hook (never its secret)",
        responses={200: InboundHookSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, name: str, pk: int) -> Response:
        hook = _hook(request, name, pk)
        return Response(InboundHookSerializer(hook, context={"request": request}).data)

    @extend_schema(
        summary="Delete an inbound hook and its delivery records (organization admins)",
        request=None,
        responses={204: None, **AUTH_ERRORS, **NOT_FOUND},
    )
    def delete(self, request: Request, name: str, pk: int) -> Response:
        hook = _hook_to_change(request, name, pk)
        services.hook_delete(hook_id=hook.pk, actor=request.user, address=_address(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class HookRotate(APIView):
    permission_classes = (InOrganization,)

    @extend_schema(
        summary="Give an inbound hook a new secret, shown in this answer only",
        description="The previous secret is still accepted for FIREFLY_INBOUND_SECRET_GRACE_S.",
        request=None,
        responses={200: InboundHookCreatedSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def post(self, request: Request, name: str, pk: int) -> Response:
        hook = _hook_to_change(request, name, pk)
        rotated = services.hook_secret_rotate(
            hook_id=hook.pk, actor=request.user, address=_address(request)
        )
        return Response(InboundHookCreatedSerializer(rotated, context={"request": request}).data)
