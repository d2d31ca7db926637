"""A task's comment thread on the page: read it, add to it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from approvals import comments, selectors, services
from approvals.models import HumanTask
from orgs.middleware import organization_of
from pipelines.errors import FireflyError
from pipelines.htmx import is_htmx


@require_http_methods(["GET", "POST"])
@login_required
def task_comments(request: HttpRequest, task_id: int) -> HttpResponse:
    """GET: the thread (htmx: the part the task page loads; otherwise a page of its own).
    POST: add a comment, then show the thread again (or go back to the task)."""
    task = selectors.task_detail(request.user, organization_of(request), task_id)
    if task is None:
        raise Http404(f"No task {task_id}.")
    error, status, body = "", 200, ""
    if request.method == "POST":
        body = request.POST.get("body", "")
        try:
            services.task_comment(task_id=task.pk, user=request.user, body=body)
        except FireflyError as exc:
            error, status = exc.message, exc.http_status
        else:
            body = ""
            if not is_htmx(request):
                return redirect(reverse("task-comments", args=[task.pk]))
    context = _thread(task, error=error, body=body)
    template = "approvals/partials/comment_thread.html"
    if not is_htmx(request):
        template = "approvals/comments_page.html"
    return render(request, template, context, status=status)


def _thread(task: HumanTask, *, error: str, body: str) -> dict[str, Any]:
    return {
        "task": task,
        "comments": list(selectors.task_comments(task)),
        "error": error,
        "body": body,
        "body_max": comments.BODY_MAX,
    }
