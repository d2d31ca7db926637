"""The inbox's bulk decision: the selected tasks approved or rejected, each on its own."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from approvals import bulk
from approvals.models import Decision
from orgs.middleware import organization_of
from pipelines.errors import FireflyError


@require_POST
@login_required
def tasks_bulk(request: HttpRequest) -> HttpResponse:
    """Decide the checked tasks; the page lists which were decided and which refused, why."""
    action = request.POST.get("action", "")
    comment = request.POST.get("comment", "")
    try:
        outcomes = bulk.tasks_decide(
            user=request.user,
            organization=organization_of(request),
            action=action,
            task_ids=bulk.task_ids(request.POST.getlist("tasks")),
            comment=comment,
            channel=Decision.Channel.WEB,
        )
    except FireflyError as exc:
        problem: dict[str, Any] = {"error": exc.message, "action": action, "comment": comment}
        return render(request, "approvals/bulk_result.html", problem, status=exc.http_status)
    decided = [o for o in outcomes if o.decided]
    refused = [o for o in outcomes if not o.decided]
    context: dict[str, Any] = {
        "action": action,
        "decided": decided,
        "refused": refused,
        "nav": "inbox",
    }
    return render(request, "approvals/bulk_result.html", context)
