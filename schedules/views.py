"""The schedules section of the pipeline page, and pausing or resuming from it."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST

from orgs.middleware import organization_of
from pipelines.errors import FireflyError, NotFound
from pipelines.htmx import is_htmx
from pipelines.models import Pipeline
from schedules import selectors, services


def pipeline_panel(request: HttpRequest, pipeline: Pipeline) -> str:
    """The pipeline page's "Schedules" section (pipelines.panels): for its starters."""
    if not services.may_see(request.user, pipeline):
        return ""
    return render_to_string("schedules/panel.html", _context(request, pipeline), request=request)


def _context(request: HttpRequest, pipeline: Pipeline, **extra: Any) -> dict[str, Any]:
    return {
        "pipeline": pipeline,
        "schedules": list(selectors.pipeline_schedules(pipeline)),
        "may_change": services.may_change(request.user, pipeline),
        **extra,
    }


@require_POST
@login_required
def schedule_toggle(request: HttpRequest, name: str, schedule_id: int, action: str) -> HttpResponse:
    """Pause or resume one schedule; htmx gets the section back, a plain form the page."""
    if action not in ("pause", "resume"):
        raise Http404(f"No action {action!r}.")
    back = reverse("pipeline", args=[name]) + "#schedules"
    error, status = "", 200
    try:
        services.schedule_update(
            schedule_id=schedule_id,
            pipeline=name,
            actor=request.user,
            organization=organization_of(request),
            enabled=action == "resume",
        )
    except NotFound as exc:
        raise Http404(exc.message) from exc
    except FireflyError as exc:
        error, status = exc.message, exc.http_status
    if not is_htmx(request):
        if error:
            messages.error(request, error)
        else:
            messages.success(request, f"Schedule {action}d.")
        return redirect(back)
    pipeline = services.pipeline_for(request.user, organization_of(request), name, change=False)
    html = render_to_string(
        "schedules/panel.html", _context(request, pipeline, error=error), request=request
    )
    return HttpResponse(html, status=status)
