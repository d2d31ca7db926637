"""Reviewer pages: the inbox and a task with its decision forms."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from approvals import selectors, services
from approvals.models import Decision, HumanTask
from orgs.middleware import organization_of
from pipelines import dag
from pipelines import selectors as pipeline_selectors
from pipelines.errors import FireflyError
from pipelines.forms import field_errors, parse_schema_form, schema_fields
from pipelines.htmx import is_htmx
from pipelines.services import version_spec

# Rendering a row costs more than finding it: a page of 50 keeps the inbox fast.
INBOX_PAGE_SIZE = 50


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    pipeline = request.GET.get("pipeline", "")
    kind = request.GET.get("kind", "")
    sort = request.GET.get("sort", "due")
    tasks = selectors.inbox_tasks(
        request.user, organization_of(request), pipeline=pipeline, kind=kind, sort=sort
    )
    page = Paginator(tasks, INBOX_PAGE_SIZE).get_page(request.GET.get("page"))
    filters = request.GET.copy()
    filters.pop("page", None)
    context = {
        "tasks": list(page.object_list),
        "page": page,
        "filters": filters.urlencode(),
        "pipeline": pipeline,
        "kind": kind,
        "sort": sort,
        "kinds": HumanTask.Kind.values,
        "pipelines": pipeline_selectors.pipeline_names(request.user, organization_of(request)),
        "query": request.GET.urlencode(),
        # The nav badge comes with the list, counted in the same request (one query whatever
        # the filters, so the page's query count does not depend on them).
        "nav_count": selectors.open_task_count(request.user, organization_of(request)),
        "inbox_counts": True,
        "nav_oob": is_htmx(request),
    }
    template = "partials/inbox_table.html" if is_htmx(request) else "approvals/inbox.html"
    return render(request, template, context)


@login_required
def inbox_count(request: HttpRequest) -> HttpResponse:
    count = selectors.open_task_count(request.user, organization_of(request))
    return HttpResponse(str(count) if count else "", content_type="text/plain")


def _task_or_404(request: HttpRequest, task_id: int) -> HumanTask:
    task = selectors.task_detail(request.user, organization_of(request), task_id)
    if task is None:
        raise Http404(f"No task {task_id}.")
    return task


def _panel_context(
    request: HttpRequest,
    task: HumanTask,
    *,
    errors: dict[str, list[str]] | None = None,
    posted: Any = None,
    message: str = "",
    level: str = "error",
) -> dict[str, Any]:
    may_act = task.is_open and services.can_act(request.user, task)
    targets: list[str] = []
    if may_act and task.kind in (HumanTask.Kind.APPROVAL, HumanTask.Kind.PAUSE):
        targets = services.rollback_targets(task)
    errors = errors or {}
    decisions = list(selectors.task_decisions(task))
    approvals = [d for d in decisions if d.action == Decision.Action.APPROVE]
    # A roll back closes the task as cancelled; the page says what happened instead.
    rollbacks = [d for d in decisions if d.action == Decision.Action.ROLLBACK]
    rolled_back = rollbacks[-1] if task.status == HumanTask.Status.CANCELLED and rollbacks else None
    return {
        "task": task,
        "rolled_back": rolled_back,
        "waited_ms": _waited_ms(task),
        # One vote per person: who approved already waits for the rest of the quorum.
        "voted": any(d.user_id == request.user.pk for d in approvals),
        "votes": len(approvals),
        "may_act": may_act,
        "holder": services.claim_holder(task),
        "targets": targets,
        "fields": schema_fields(task.form_schema, posted, errors)
        if task.kind == HumanTask.Kind.INPUT
        else [],
        "errors": errors,
        "posted": posted or {},
        "message": message,
        "level": level,
        "decisions": decisions,
    }


def _waited_ms(task: HumanTask) -> int | None:
    """How long the task waited for its decision (shown as a human wait, not in ms)."""
    if task.decided_at is None:
        return None
    return max(0, int((task.decided_at - task.created_at).total_seconds() * 1000))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@login_required
def task_detail(request: HttpRequest, task_id: int) -> HttpResponse:
    task = _task_or_404(request, task_id)
    if is_htmx(request) and request.GET.get("part") == "panel":
        return render(request, "partials/task_panel.html", _panel_context(request, task))
    context = task.context or {}
    upstream = context.get("upstream") or {}
    page = _panel_context(request, task)
    page.update(
        run=task.run,
        inputs_json=_pretty(context.get("inputs", {})),
        upstream_json=[(name, _pretty(value)) for name, value in sorted(upstream.items())],
        svg=_picture(task),
    )
    return render(request, "approvals/task.html", page)


def _picture(task: HumanTask) -> str:
    spec = version_spec(task.run.pipeline_version_id)
    return dag.render_svg(
        spec, pipeline_selectors.current_states(task.run), highlight=task.step_name
    )


def _decided(request: HttpRequest, context: dict[str, Any], status: int = 200) -> HttpResponse:
    """The panel, with the page's header and picture out of band: all read after the decision
    (or the refusal, which may mean someone else decided), so none of them shows it open."""
    task = context["task"]
    context.update(run=task.run, svg=_picture(task))
    return render(request, "approvals/task_decided.html", context, status=status)


ACTIONS = ("approve", "reject", "rollback", "complete", "claim", "unclaim", "break_claim")


@require_POST
@login_required
def task_action(request: HttpRequest, task_id: int, action: str) -> HttpResponse:
    """Apply one decision through its service; a refusal is shown where the form was."""
    if action not in ACTIONS:
        raise Http404(f"No action {action!r}.")
    task = _task_or_404(request, task_id)
    user, comment = request.user, request.POST.get("comment", "")
    posted: Any = None
    try:
        if action == "approve":
            services.task_approve(task_id=task.pk, user=user, comment=comment)
            done = "Approved."
        elif action == "reject":
            services.task_reject(task_id=task.pk, user=user, comment=comment)
            done = "Rejected: the run ends."
        elif action == "rollback":
            to_step = request.POST.get("to_step", "")
            services.task_rollback(task_id=task.pk, user=user, to_step=to_step, comment=comment)
            done = f"Rolled back to {to_step}."
        elif action == "complete" and task.kind == HumanTask.Kind.CHOICE:
            choice = request.POST.get("choice", "")
            services.task_complete(task_id=task.pk, user=user, choice=choice)
            done = f"Chose {choice}."
        elif action == "complete":
            posted = request.POST
            data = parse_schema_form(task.form_schema, request.POST)
            services.task_complete(task_id=task.pk, user=user, data=data)
            done = "Submitted."
        elif action == "claim":
            services.task_claim(task_id=task.pk, user=user)
            done = "Claimed: the others of the role leave it to you."
        elif action == "unclaim":
            services.task_unclaim(task_id=task.pk, user=user)
            done = "Released to the role."
        else:
            services.task_claim_break(task_id=task.pk, user=user)
            done = "Claim broken: the task is back with its role."
    except FireflyError as exc:
        task = _task_or_404(request, task_id)
        if is_htmx(request):
            context = _panel_context(
                request, task, errors=field_errors(exc), posted=posted, message=exc.message
            )
            return _decided(request, context, status=exc.http_status)
        messages.error(request, exc.message)
        if exc.http_status == 403:
            back = reverse("task", args=[task.pk])
            return render(request, "403.html", {"text": exc.message, "back": back}, status=403)
        return redirect("task", task_id=task.pk)
    task = _task_or_404(request, task_id)
    if is_htmx(request):
        context = _panel_context(request, task, message=done, level="success")
        response = _decided(request, context)
        response["HX-Trigger"] = "task-decided"
        return response
    messages.success(request, done)
    return redirect("task", task_id=task.pk)
