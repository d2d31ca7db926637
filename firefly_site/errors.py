"""Error and refusal pages that tell the visitor what happened and nothing about the server."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader

from firefly_site.api_errors import body


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the API's JSON error shape under /api/, a plain page elsewhere.

    Django has logged the exception before calling this; neither body holds any of it.
    """
    if request.path.startswith("/api/"):
        return JsonResponse(
            body("server_error", "Internal server error; it has been logged."), status=500
        )
    # No request context: the failure may lie in a context processor or the database.
    return HttpResponse(loader.get_template("500.html").render(), status=500)


def login_locked_out(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """django-axes' lockout response: the login page's lockout message, 429."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return render(request, "registration/locked_out.html", {"cooloff_minutes": minutes}, status=429)
