"""The REST API's one error shape, {"error": {"code", "message", "details"}}, for every failure."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import set_rollback

from pipelines.errors import FireflyError
from pipelines.security import refusal_record


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable: invalid, not_found, ...")
    message = serializers.CharField(help_text="For the person who asked.")
    details = serializers.JSONField(
        allow_null=True,
        help_text="Per-field problems for 400 ([{field, message}] or {field: [messages]}).",
    )


class ErrorSerializer(serializers.Serializer):
    """The body of every error response (`Error` in the OpenAPI schema)."""

    error = ErrorBodySerializer()


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


# The error responses every authenticated endpoint can give; views add 400/404/409.
AUTH_ERRORS = {
    401: error_response("Not authenticated."),
    403: error_response("Not allowed; the message says why."),
}
NOT_FOUND = {404: error_response("No such object.")}
INVALID = {400: error_response("Invalid input; `details` names each field.")}
CONFLICT = {409: error_response("The object's state forbids this (finished run, decided task).")}
THROTTLED = {429: error_response("Too many requests of this kind; Retry-After gives the seconds.")}

_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ParseError: "malformed",
    exceptions.ValidationError: "invalid",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


def body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map service refusals and DRF's own errors to one JSON shape.

    Anything else is left to Django (a 500, logged): a bug, not bad input.
    """
    if isinstance(exc, FireflyError):
        set_rollback()
        return Response(body(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    if not isinstance(exc, exceptions.APIException):
        return None
    set_rollback()
    if isinstance(exc, exceptions.PermissionDenied):
        _record_forbidden(exc, context)
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    code = next(
        (name for cls, name in _CODES.items() if isinstance(exc, cls)),
        str(exc.default_code),
    )
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail
        message = "Invalid input: " + _summary(details)
    else:
        details = None
        message = str(exc.detail)
    return Response(body(code, message, details), status=exc.status_code, headers=headers)


def _summary(detail: Any, prefix: str = "") -> str:
    """One line naming each invalid field, for people reading `message` only."""
    if isinstance(detail, dict):
        return "; ".join(
            _summary(value, f"{prefix}.{key}" if prefix else str(key))
            for key, value in detail.items()
        )
    if isinstance(detail, list) and detail and all(isinstance(d, str) for d in detail):
        return f"{prefix or 'body'}: {' '.join(detail)}"
    if isinstance(detail, list):
        return "; ".join(_summary(d, f"{prefix}[{i}]") for i, d in enumerate(detail) if d)
    return f"{prefix or 'body'}: {detail}"


def _record_forbidden(exc: exceptions.APIException, context: dict[str, Any]) -> None:
    """A permission class refused a signed-in caller (staff-only endpoints): keep the
    evidence. Refusals by the services are in the run's own audit trail instead."""
    request = context.get("request")
    if request is None:
        return
    refusal_record(
        event="api.forbidden",
        reason=str(exc.detail),
        actor=getattr(request, "user", None),
        address=request.META.get("REMOTE_ADDR"),
        organization=getattr(request, "organization", None),
        method=request.method,
        path=request.path,
    )
