"""REST API of a pipeline's schedules: /api/v1/pipelines/{name}/schedules/."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from firefly_site.api_errors import AUTH_ERRORS, CONFLICT, INVALID, NOT_FOUND
from pipelines.api import organization_or_404
from schedules import selectors, services
from schedules.models import Schedule
from schedules.serializers import ScheduleSerializer, ScheduleWriteSerializer


def _write_data(request: Request, *, partial: bool) -> dict[str, Any]:
    serializer = ScheduleWriteSerializer(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _shown(pipeline: Any, pk: int) -> dict[str, Any]:
    found = selectors.pipeline_schedules(pipeline).filter(pk=pk).first()
    if found is None:
        raise exceptions.NotFound(f"No schedule {pk} of pipeline {pipeline.name!r}.")
    return dict(ScheduleSerializer(found).data)


class ScheduleList(APIView):
    @extend_schema(
        summary="A pipeline's schedules (its starters)",
        responses={200: ScheduleSerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, name: str) -> Response:
        pipeline = services.pipeline_for(
            request.user, organization_or_404(request), name, change=False
        )
        found = selectors.pipeline_schedules(pipeline)
        return Response(ScheduleSerializer(found, many=True).data)

    @extend_schema(
        summary="Add a schedule: a cron expression in a time zone, or an interval (authors)",
        request=ScheduleWriteSerializer,
        responses={
            201: ScheduleSerializer,
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: OpenApiResponse(CONFLICT[409].response, description="The name is taken."),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        organization = organization_or_404(request)
        data = _write_data(request, partial=False)
        schedule = services.schedule_create(
            pipeline=name, actor=request.user, organization=organization, **data
        )
        return Response(
            _shown(schedule.pipeline, schedule.pk),
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("api:schedule", args=[name, schedule.pk])},
        )


class ScheduleDetail(APIView):
    @extend_schema(
        summary="One schedule, its next slot and last run",
        responses={200: ScheduleSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, name: str, pk: int) -> Response:
        pipeline = services.pipeline_for(
            request.user, organization_or_404(request), name, change=False
        )
        return Response(_shown(pipeline, pk))

    def _change(self, request: Request, name: str, pk: int, *, partial: bool) -> Response:
        organization = organization_or_404(request)
        data = _write_data(request, partial=partial)
        if not partial:
            # A full replacement: what is left out takes its default.
            data = {**_DEFAULTS, **data}
        schedule = services.schedule_update(
            schedule_id=pk, pipeline=name, actor=request.user, organization=organization, **data
        )
        return Response(_shown(schedule.pipeline, schedule.pk))

    @extend_schema(
        summary="Replace a schedule (authors; a spec's schedule: only `enabled`)",
        request=ScheduleWriteSerializer,
        responses={200: ScheduleSerializer, **INVALID, **AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    def put(self, request: Request, name: str, pk: int) -> Response:
        return self._change(request, name, pk, partial=False)

    @extend_schema(
        summary='Change a schedule; `{"enabled": false}` pauses it, `true` resumes it',
        request=ScheduleWriteSerializer(partial=True),
        responses={200: ScheduleSerializer, **INVALID, **AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    def patch(self, request: Request, name: str, pk: int) -> Response:
        return self._change(request, name, pk, partial=True)

    @extend_schema(
        summary="Delete a schedule made through the API (authors)",
        request=None,
        responses={204: None, **AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    def delete(self, request: Request, name: str, pk: int) -> Response:
        services.schedule_delete(
            schedule_id=pk,
            pipeline=name,
            actor=request.user,
            organization=organization_or_404(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


_DEFAULTS: dict[str, Any] = {
    "cron": "",
    "timezone": "UTC",
    "every_s": None,
    "inputs": {},
    "enabled": True,
    "overlap": Schedule.Overlap.SKIP.value,
    "missed": Schedule.Missed.SKIP_MISSED.value,
}
