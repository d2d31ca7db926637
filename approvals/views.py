"""Reviewer pages: the inbox and a task with its decision forms."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from approvals import guards, selectors, services
from approvals.models import Decision, HumanTask
from orgs.middleware import organization_of
from pipelines import dag, markdown
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
    view = request.GET.get("view", "mine")
    if view not in dict(selectors.INBOX_VIEWS):
        view = "mine"
    raw = request.GET.get("q", "")
    search = selectors.search_term(raw)
    tasks = selectors.inbox_tasks(
        request.user,
        organization_of(request),
        pipeline=pipeline,
        kind=kind,
        sort=sort,
        view=view,
        search=search,
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
        "view": view,
        "views": inbox_tabs(request, view),
        "search": search,
        "search_cut": len(raw.strip()) > selectors.SEARCH_MAX,
        "search_max": selectors.SEARCH_MAX,
        "kinds": HumanTask.Kind.values,
        "pipelines": pipeline_selectors.pipeline_names(request.user, organization_of(request)),
        "query": request.GET.urlencode(),
        # The nav badge comes with the list, counted in the same request (one query whatever
        # the filters, so the page's query count does not depend on them).
        "nav_count": selectors.open_task_count(request.user, organization_of(request)),
        "inbox_counts": True,
        "nav_oob": is_htmx(request),
        "refilter": request.headers.get("HX-Trigger") == "inbox-filters",
    }
    template = "partials/inbox_table.html" if is_htmx(request) else "approvals/inbox.html"
    return render(request, template, context)


def inbox_tabs(request: HttpRequest, current: str) -> list[dict[str, Any]]:
    """The inbox's views as links that keep the other filters (not the page)."""
    tabs = []
    for name, label in selectors.INBOX_VIEWS:
        query = request.GET.copy()
        query.pop("page", None)
        query["view"] = name
        tabs.append(
            {"name": name, "label": label, "query": query.urlencode(), "current": name == current}
        )
    return tabs


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
        "approvers": [d.user.get_username() if d.user else "deadline" for d in approvals],
        **_refusals(request, task, may_act),
        **_reassign_context(request, task),
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


# The action each kind's main form takes, as the guards name it.
MAIN_ACTION = {
    HumanTask.Kind.APPROVAL: Decision.Action.APPROVE,
    HumanTask.Kind.PAUSE: Decision.Action.APPROVE,
    HumanTask.Kind.INPUT: Decision.Action.SUBMIT,
    HumanTask.Kind.CHOICE: Decision.Action.CHOOSE,
}


def _refusals(request: HttpRequest, task: HumanTask, may_act: bool) -> dict[str, str]:
    """Why the service would refuse the panel's main action or a claim, asked of the same
    guard it uses: the panel shows the reason instead of a button that only refuses."""
    if not may_act:
        return {"main_refusal": "", "claim_refusal": ""}
    main = MAIN_ACTION.get(HumanTask.Kind(task.kind))
    main_refusal = guards.refusal_now(task, request.user, main) if main else None
    claim_refusal = guards.refusal_now(task, request.user, "claim")
    return {
        "main_refusal": str(main_refusal) if main_refusal else "",
        "claim_refusal": str(claim_refusal) if claim_refusal else "",
    }


def _reassign_context(request: HttpRequest, task: HumanTask) -> dict[str, Any]:
    """The reassign form's choices, for the organization's admins on an open task."""
    if not (task.is_open and guards.can_manage(request.user, task)):
        return {"may_reassign": False}
    members, roles = selectors.reassign_choices(task.organization_id)
    return {"may_reassign": True, "members": members, "roles": roles}


def instructions_html(task: HumanTask) -> SafeString:
    """The task's instructions as Markdown, its placeholders filled from what the step shares
    with its reviewers (the task's context), never from the rest of the run."""
    context = task.context or {}
    values = {"inputs": context.get("inputs") or {}, "outputs": context.get("upstream") or {}}
    # Safe: raw HTML is off in the parser and values are inserted as escaped text.
    return mark_safe(markdown.render(task.instructions, values))  # noqa: S308


# The task page polls this often while the task is open (someone else may decide it).
TASK_POLL_S = 5
# htmx stops polling on this status: the answer that finds the task decided is the last.
STOP_POLLING = 286


@login_required
def task_detail(request: HttpRequest, task_id: int) -> HttpResponse:
    task = _task_or_404(request, task_id)
    if is_htmx(request) and request.GET.get("part") == "panel":
        return render(request, "partials/task_panel.html", _panel_context(request, task))
    if is_htmx(request) and request.GET.get("part") == "live":
        # Header, panel and picture in one answer, as after a decision on this page.
        return _decided(
            request, _panel_context(request, task), status=200 if task.is_open else STOP_POLLING
        )
    context = task.context or {}
    upstream = context.get("upstream") or {}
    page = _panel_context(request, task)
    page.update(
        run=task.run,
        instructions=instructions_html(task) if task.instructions else "",
        inputs=context.get("inputs") or {},
        upstream=sorted(upstream.items()),
        svg=_picture(task),
        poll_s=TASK_POLL_S,
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


ACTIONS = (
    "approve",
    "reject",
    "rollback",
    "complete",
    "claim",
    "unclaim",
    "break_claim",
    "reassign",
)


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
        elif action == "reassign":
            to, to_role = (
                request.POST.get("to", "").strip(),
                request.POST.get("to_role", "").strip(),
            )
            services.task_reassign(
                task_id=task.pk, user=user, assignee=to or None, role=to_role or None
            )
            done = "Reassigned to " + " / ".join(filter(None, [to, to_role and f"role {to_role}"]))
            done += "."
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


ARCHIVE_PAGE_SIZE = 50


@login_required
def archive(request: HttpRequest) -> HttpResponse:
    """Decided by me: the decisions the user made in this organization, newest first."""
    decisions = selectors.decided_by(request.user, organization_of(request))
    page = Paginator(decisions, ARCHIVE_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"decisions": list(page.object_list), "page": page, "filters": "", "nav": "archive"}
    return render(request, "approvals/archive.html", context)
