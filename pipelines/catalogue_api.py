"""REST API for integrators: the step types, the spec's JSON Schema, checking a spec."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from firefly_site.api_errors import AUTH_ERRORS, INVALID, NOT_FOUND, THROTTLED
from firefly_site.throttles import AuditedScopedThrottle
from pipelines import catalogue
from pipelines.api import PipelineDetail, organization_or_404, validated
from pipelines.serializers import PipelineCreateSerializer


class StepTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    interactive = serializers.BooleanField(
        help_text="Waits for people (a task opens) instead of running a handler."
    )
    config_schema = serializers.JSONField(help_text="The JSON Schema of the step's `config`.")
    example = serializers.JSONField(help_text="A config this type accepts.")


class SpecErrorSerializer(serializers.Serializer):
    step = serializers.CharField(
        allow_null=True, help_text="The step's name, or #N; null: the spec."
    )
    field = serializers.CharField(allow_null=True, help_text="Dotted path inside the step or spec.")
    message = serializers.CharField()
    line = serializers.IntegerField(
        allow_null=True, help_text="The line of the spec text it is about; null for an object."
    )


class DagNodeSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    interactive = serializers.BooleanField()
    after = serializers.ListField(child=serializers.CharField())
    column = serializers.IntegerField(help_text="Longest path from a first step.")
    row = serializers.IntegerField()


class DagSerializer(serializers.Serializer):
    svg = serializers.CharField(help_text="The picture the pipeline page shows.")
    order = serializers.ListField(child=serializers.CharField(), help_text="A run's order.")
    nodes = DagNodeSerializer(many=True)


class ValidationResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    name = serializers.CharField(allow_null=True, help_text="The spec's pipeline name, if valid.")
    errors = SpecErrorSerializer(
        many=True, help_text="What loading the spec would refuse (empty when valid)."
    )
    dag = DagSerializer(allow_null=True, help_text="The DAG picture, when valid.")


class StepTypeList(APIView):
    throttle_classes = [AuditedScopedThrottle]
    throttle_scope = "catalogue"

    @extend_schema(
        summary="Every step type a spec may use, with its config schema and an example",
        responses={200: StepTypeSerializer(many=True), **AUTH_ERRORS, **THROTTLED},
    )
    def get(self, request: Request) -> Response:
        return Response(StepTypeSerializer(catalogue.step_types(), many=True).data)


class SpecSchema(APIView):
    # Public: editors' YAML language servers fetch it without credentials, and it says
    # only what the code registers, the same for every organization.
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes = [AuditedScopedThrottle]
    throttle_scope = "catalogue"

    @extend_schema(
        summary="The JSON Schema (2020-12) of a whole pipeline spec, for editors",
        auth=[],
        responses={
            200: OpenApiResponse(
                {"type": "object", "additionalProperties": True},
                description="A JSON Schema; validates what a schema can (not cycles).",
            ),
            **THROTTLED,
        },
    )
    def get(self, request: Request) -> Response:
        schema_id = request.build_absolute_uri(reverse("api:spec-schema"))
        response = Response(catalogue.spec_schema(schema_id))
        response["Cache-Control"] = "public, max-age=300"
        return response


class PipelineValidate(APIView):
    throttle_classes = [AuditedScopedThrottle]
    throttle_scope = "spec_validate"

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        # The path is also that of a pipeline named "validate": show it, as for any name.
        return PipelineDetail().get(request, name="validate")

    @extend_schema(
        summary="Check a spec without saving it: the errors loading it would give, or its DAG",
        request=PipelineCreateSerializer,
        responses={
            200: ValidationResultSerializer,
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            **THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        organization_or_404(request)
        data = validated(PipelineCreateSerializer, request)
        checked = catalogue.check(data["spec"])
        body = {
            "valid": checked.valid,
            "name": checked.spec.name if checked.spec else None,
            "errors": checked.errors,
            "dag": checked.picture(),
        }
        return Response(ValidationResultSerializer(body).data)
