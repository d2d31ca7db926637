"""Operator pages: runs, one run, pipelines and the start-run form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from orgs.middleware import organization_of
from pipelines import catalogue, dag, editor, panels, permissions, selectors, services, timeline
from pipelines import states as states_rule
from pipelines.errors import FireflyError
from pipelines.forms import field_errors, parse_schema_form, schema_fields
from pipelines.htmx import is_htmx
from pipelines.models import HandoffEnvelope, Run, StepRun
from pipelines.services.finishing import KINDS

RUNS_PER_PAGE = 25
AUDIT_PER_PAGE = 20
CHECKPOINTS_SHOWN = 200


# --- runs -----------------------------------------------------------------------------


@login_required
def runs_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "")
    pipeline = request.GET.get("pipeline", "")
    runs_found = selectors.runs_list(
        request.user, organization_of(request), status=status, pipeline=pipeline
    )
    page = Paginator(runs_found, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    runs = list(page.object_list)
    filters = request.GET.copy()
    filters.pop("page", None)
    context = {
        "page": page,
        "filters": filters.urlencode(),
        "runs": runs,
        "status": status,
        "pipeline": pipeline,
        "statuses": Run.Status.values,
        "pipelines": selectors.pipeline_names(request.user, organization_of(request)),
        "live": any(not run.is_finished for run in runs),
        "query": request.GET.urlencode(),
    }
    template = "partials/runs_table.html" if is_htmx(request) else "pipelines/runs.html"
    return render(request, template, context)


def _run_or_404(request: HttpRequest, run_id: int) -> Run:
    run = selectors.run_detail(request.user, organization_of(request), run_id)
    if run is None:
        raise Http404(f"No run {run_id}.")
    return run


def _run_live_context(request: HttpRequest, run: Run) -> dict[str, Any]:
    spec = services.version_spec(run.pipeline_version_id)
    # One read of every attempt serves the steps table, the picture and the timeline.
    attempts = list(selectors.run_steps(run))
    latest = states_rule.latest((a.step_name, a) for a in attempts)
    steps = [latest[name] for name in spec.order if name in latest]
    states = selectors.current_states(run, steps)
    done = sum(1 for s in steps if s.status in selectors.DONE_STATUSES)
    allowed = selectors.may_operate(request.user, run)
    unsettled = services.unsettled(run.pk)
    # A step waiting for a person links to the task it waits on (an open task is unsettled
    # work of the run, read anyway below).
    tasks = {t["step"]: t["id"] for t in unsettled.items.get("open_tasks", [])}
    return {
        "run": run,
        "spec": spec,
        # Each step with the queue its messages go to (shown while it waits there), and
        # the open task a waiting step waits on.
        "step_rows": [
            (
                s,
                spec.by_name[s.step_name].queue,
                tasks.get(s.step_name) if s.status == StepRun.Status.WAITING else None,
            )
            for s in steps
        ],
        # The groups of the picture the reader opened ride in the address (?expand=).
        "svg": dag.render_svg(spec, states, expand=request.GET.getlist("expand")),
        "timeline": timeline.build(spec, attempts, now=timezone.now()),
        "done": done,
        "total": len(spec.order),
        "can_cancel": allowed and not run.is_finished,
        "can_resume": allowed and run.status == Run.Status.FAILED,
        "can_fork": allowed,
        "disposition": _shown(run.disposition),
        "live": not run.is_finished,
        # Refreshed with the rest of the live part: one query per kind of work.
        "unsettled": _unsettled_rows(unsettled),
        # What each succeeded step gave, and the run's output: read with the steps and the
        # run, no query of their own.
        "step_outputs": [
            s for s in steps if s.status == StepRun.Status.SUCCEEDED and s.outputs is not None
        ],
        "run_output": run.output,
    }


def _unsettled_rows(found: services.Unsettled) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(kind, its label, its items) for each kind of the run's unsettled work that has some."""
    labels = {name: many for name, _, many in KINDS}
    return [
        (name, labels.get(name, name.replace("_", " ")), items)
        for name, items in found.items.items()
        if items
    ]


def _shown(value: Any) -> str:
    """A JSON value for a page: text as it is, anything else indented."""
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@dataclass
class EnvelopeRow:
    envelope: HandoffEnvelope
    payload: str
    decision: str
    errors: list[str] = field(default_factory=list)
    posted: str = ""
    # A step waits for the child run: its end settles the handoff (the service refuses a
    # person's acknowledgement meanwhile), so the page offers nothing to decide.
    waits_for_child: bool = False


def _handoffs_context(
    request: HttpRequest,
    run: Run,
    *,
    message: str = "",
    level: str = "error",
    failed: int | None = None,
    errors: list[str] | None = None,
    posted: str = "",
) -> dict[str, Any]:
    """The run's place among handoffs: where it came from, its children and its envelopes.

    At most three queries (the envelope it came from, children, envelopes), however many
    there are. `failed` is the envelope whose Acknowledge form was refused, shown again
    with `errors` and `posted`.
    """
    children = selectors.run_children(run)
    rows = [
        EnvelopeRow(
            envelope=envelope,
            payload=_shown(envelope.payload),
            decision=_shown(envelope.decision),
            errors=list(errors or []) if envelope.pk == failed else [],
            posted=posted if envelope.pk == failed else "",
            waits_for_child=envelope.wait and envelope.acknowledged_at is None,
        )
        for envelope in selectors.run_handoffs(run)
    ]
    return {
        "run": run,
        "came_from": selectors.handoff_origin(run),
        "children": children,
        "envelopes": rows,
        "may_acknowledge": selectors.may_operate(request.user, run),
        "handoff_message": message,
        "handoff_level": level,
        # Children move on after their parent finished: keep following them.
        "handoffs_live": not run.is_finished or any(not c.is_finished for c in children),
    }


@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(request, run_id)
    if is_htmx(request) and request.GET.get("part") == "handoffs":
        return render(request, "partials/run_handoffs.html", _handoffs_context(request, run))
    if is_htmx(request) and request.GET.get("part") == "audit":
        return render(request, "partials/run_audit.html", _audit_context(request, run))
    context = _run_live_context(request, run)
    context.update(_audit_context(request, run))
    context["checkpoints"] = list(selectors.run_checkpoints(run)[:CHECKPOINTS_SHOWN])
    if is_htmx(request) and request.GET.get("part") == "live":
        # Every panel that changes with the run, read in this one request: the answer that
        # finds the run finished shows its final state everywhere, and polls no more.
        return render(request, "partials/run_live.html", {**context, "refresh_all": True})
    context.update(_handoffs_context(request, run))
    return render(request, "pipelines/run.html", context)


def _audit_context(request: HttpRequest, run: Run) -> dict[str, Any]:
    # The page count comes from the run's own sequence counter, not a COUNT(*).
    paginator = Paginator(selectors.run_audit(run), AUDIT_PER_PAGE)
    paginator.count = run.audit_seq
    page = paginator.get_page(request.GET.get("audit_page"))
    return {"audit_page": page, "run": run}


def _refused(request: HttpRequest, exc: FireflyError, back: str) -> HttpResponse:
    """A refusal: inline message (htmx) or flash message and redirect (plain post)."""
    if is_htmx(request):
        response = render(request, "partials/message.html", {"level": "error", "text": exc.message})
        response.status_code = exc.http_status
        return response
    messages.error(request, exc.message)
    if exc.http_status == 403:
        response = render(request, "403.html", {"text": exc.message, "back": back})
        response.status_code = 403
        return response
    return redirect(back)


def _operate(request: HttpRequest, run_id: int, verb: str, act: Any, done: str) -> HttpResponse:
    """Cancel or resume: only staff or the run's starter, through the service."""
    run = _run_or_404(request, run_id)
    back = reverse("run", args=[run.pk])
    try:
        act(run_id=run.pk, actor=request.user)
    except FireflyError as exc:
        return _refused(request, exc, back)
    messages.success(request, done.format(run=run.pk))
    return redirect(back)


@require_POST
@login_required
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    return _operate(request, run_id, "cancel", services.run_cancel, "Run {run} cancelled.")


@require_POST
@login_required
def run_resume(request: HttpRequest, run_id: int) -> HttpResponse:
    done = "Run {run} resumed from its last checkpoint."
    return _operate(request, run_id, "resume", services.run_resume, done)


@require_POST
@login_required
def handoff_acknowledge(request: HttpRequest, envelope_id: int) -> HttpResponse:
    """Settle a handoff of a run: the same people who may cancel the run."""
    run_id = selectors.handoff_origin_run_id(request.user, organization_of(request), envelope_id)
    if run_id is None:
        raise Http404(f"No handoff {envelope_id}.")
    run = _run_or_404(request, run_id)
    back = reverse("run", args=[run.pk]) + f"#handoff-{envelope_id}"
    decision = request.POST.get("decision", "").strip()
    try:
        services.acknowledge_handoff(envelope_id=envelope_id, decision=decision, actor=request.user)
    except FireflyError as exc:
        if not is_htmx(request):
            return _refused(request, exc, back)
        context = _handoffs_context(
            request,
            run,
            message=exc.message,
            failed=envelope_id,
            errors=field_errors(exc).get("decision", []),
            posted=decision,
        )
        return render(request, "partials/run_handoffs.html", context, status=exc.http_status)
    done = f"Handoff {envelope_id} acknowledged."
    if is_htmx(request):
        context = _handoffs_context(request, run, message=done, level="success")
        return render(request, "partials/run_handoffs.html", context)
    messages.success(request, done)
    return redirect(back)


@require_POST
@login_required
def run_fork(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(request, run_id)
    back = reverse("run", args=[run.pk])
    try:
        seq = int(request.POST.get("checkpoint", ""))
    except ValueError:
        messages.error(request, "Choose a checkpoint to fork from.")
        return redirect(back)
    try:
        new = services.run_fork(run_id=run.pk, checkpoint_seq=seq, actor=request.user)
    except FireflyError as exc:
        return _refused(request, exc, back)
    messages.success(request, f"Run {new.pk} forked from run {run.pk} at checkpoint {seq}.")
    return redirect("run", run_id=new.pk)


# --- pipelines ------------------------------------------------------------------------


@login_required
def pipelines_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "pipelines/pipelines.html",
        {"pipelines": list(selectors.pipelines_list(request.user, organization_of(request)))},
    )


@login_required
def step_types(request: HttpRequest) -> HttpResponse:
    """The step types a spec may use, each with its config schema and an example."""
    kinds = [
        {
            **entry,
            "schema_json": json.dumps(entry["config_schema"], indent=2),
            "example_yaml": editor.spec_text(entry["example"]) if entry["example"] else "{}\n",
        }
        for entry in catalogue.step_types()
    ]
    return render(request, "pipelines/step_types.html", {"kinds": kinds, "nav": "pipelines"})


def _pipeline_context(request: HttpRequest, name: str) -> dict[str, Any]:
    pipeline = selectors.pipeline_by_name(request.user, organization_of(request), name)
    if pipeline is None:
        raise Http404(f"No pipeline {name!r}.")
    version = services.pipeline_version(name, organization=pipeline.organization_id)
    spec = services.version_spec(version.pk)
    return {
        "pipeline": pipeline,
        "version": version,
        "spec": spec,
        "svg": dag.render_svg(spec, expand=request.GET.getlist("expand")),
        "versions": list(selectors.pipeline_versions(pipeline)[:50]),
        "recent_runs": list(
            selectors.runs_list(request.user, organization_of(request), pipeline=name)[:10]
        ),
        "may_start": permissions.allowed(request.user, "start_run", pipeline),
        "may_edit": permissions.allowed(request.user, "create_version", pipeline),
        # Sections other apps add (schedules), rendered by them.
        "panels": panels.render(request, pipeline),
    }


@login_required
def pipeline_detail(request: HttpRequest, name: str) -> HttpResponse:
    context = _pipeline_context(request, name)
    context["fields"] = schema_fields(context["spec"].input_schema)
    if context["may_edit"]:
        text = editor.spec_text(context["version"].spec)
        context.update(editor.editor_context(text, catalogue.check(text)))
    return render(request, "pipelines/pipeline.html", context)


@require_POST
@login_required
def pipeline_edit(request: HttpRequest, name: str) -> HttpResponse:
    """Save the editor's text as the pipeline's next version (authors of the pipeline)."""
    try:
        pipeline = editor.pipeline_for_author(request, name, "add a version of")
    except editor.Forbidden as exc:
        return editor.forbidden(request, str(exc))
    text = request.POST.get("spec", "")
    try:
        saved, checked = editor.save(request, pipeline, text)
    except FireflyError as exc:
        return _refused(request, exc, reverse("pipeline", args=[name]))
    if saved:
        return redirect("pipeline", name=name)
    context = _pipeline_context(request, name)
    context["fields"] = schema_fields(context["spec"].input_schema)
    context.update(editor.editor_context(text, checked), editor_open=True)
    return render(request, "pipelines/pipeline.html", context, status=400)


@require_POST
@login_required
def pipeline_start(request: HttpRequest, name: str) -> HttpResponse:
    context = _pipeline_context(request, name)
    schema = context["spec"].input_schema
    inputs = parse_schema_form(schema, request.POST)
    try:
        run = services.run_start(
            pipeline=name,
            inputs=inputs,
            actor=request.user,
            organization=context["pipeline"].organization_id,
        )
    except FireflyError as exc:
        errors = field_errors(exc)
        context.update(
            fields=schema_fields(schema, request.POST, errors),
            form_error=exc.message if not any(errors.values()) or "" in errors else "",
        )
        template = "partials/start_form.html" if is_htmx(request) else "pipelines/pipeline.html"
        return render(request, template, context, status=exc.http_status)
    messages.success(request, f"Run {run.pk} of {name} started.")
    url = reverse("run", args=[run.pk])
    if is_htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)
