"""Editing a pipeline's next version in the browser: the check as one types, and saving."""

from __future__ import annotations

from typing import Any

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from orgs.middleware import organization_of
from pipelines import catalogue, permissions, selectors, services, spec_lines
from pipelines.models import Pipeline
from pipelines.security import refusal_record

# The gutter numbers every line; past this many it numbers none (the text is refused
# by its size long before, FIREFLY_SPEC_MAX_BYTES, but the page must not grow with it).
GUTTER_MAX_LINES = 5000


class _NoAliases(yaml.SafeDumper):
    """Write every value out: the spec loader refuses anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def spec_text(spec: Any) -> str:
    """A version's spec as the YAML the editor starts from."""
    return yaml.dump(
        spec, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, default_flow_style=False
    )


def editor_context(text: str, checked: catalogue.Checked) -> dict[str, Any]:
    """The check's part of the editor: errors by line, the gutter, the DAG preview."""
    by_line: dict[int, list[str]] = {}
    for error in checked.errors:
        if error.get("line"):
            by_line.setdefault(error["line"], []).append(error["message"])
    count = text.count("\n") + 1
    gutter = [(n, by_line.get(n)) for n in range(1, count + 1)] if count <= GUTTER_MAX_LINES else []
    return {
        "spec_text": text,
        "checked": checked,
        "spec_errors": [_shown_error(error) for error in checked.errors],
        "gutter": gutter,
        # As tall as its text, so no line scrolls away from its number in the gutter.
        "spec_rows": min(max(count + 1, 12), GUTTER_MAX_LINES),
        "preview": checked.svg(),
    }


def _shown_error(error: dict[str, Any]) -> dict[str, Any]:
    where = ".".join(
        p for p in (error.get("step") and f"steps[{error['step']}]", error.get("field")) if p
    )
    return {"line": error.get("line"), "where": where, "message": error["message"]}


def pipeline_for_author(request: HttpRequest, name: str, what: str) -> Pipeline:
    """The pipeline, if the user sees it (else 404) and may add its versions (else 403)."""
    pipeline = selectors.pipeline_by_name(request.user, organization_of(request), name)
    if pipeline is None:
        raise Http404(f"No pipeline {name!r}.")
    if not permissions.allowed(request.user, "create_version", pipeline):
        reason = (
            f"You may not {what} pipeline {name!r}: adding versions takes the organization's"
            " author role and the pipeline's operator role."
        )
        refusal_record(
            event="pipeline.refused",
            reason=reason,
            actor=request.user,
            address=request.META.get("REMOTE_ADDR"),
            organization=pipeline.organization_id,
            pipeline=name,
        )
        raise Forbidden(reason)
    return pipeline


class Forbidden(Exception):
    """The user may see the pipeline but not add its versions (recorded)."""


def forbidden(request: HttpRequest, text: str) -> HttpResponse:
    template = "partials/message.html" if request.headers.get("HX-Request") else "403.html"
    context = {"level": "error", "text": text, "back": request.path.rsplit("edit/", 1)[0]}
    return render(request, template, context, status=403)


def _check(pipeline: Pipeline, text: str) -> catalogue.Checked:
    checked = catalogue.check(text)
    if checked.spec is not None and checked.spec.name != pipeline.name:
        # Saving it would make a version of another pipeline: this page edits this one.
        error = {
            "step": None,
            "field": "name",
            "message": f"this page edits pipeline {pipeline.name!r}; the spec names "
            f"{checked.spec.name!r} (to start another pipeline, use the API or load_pipeline)",
        }
        root = spec_lines.compose(text)
        return catalogue.Checked(None, spec_lines.with_lines(root, [error]))
    return checked


@require_POST
@login_required
def spec_check(request: HttpRequest, name: str) -> HttpResponse:
    """The editor's check on every pause in typing (htmx): nothing is saved."""
    try:
        pipeline = pipeline_for_author(request, name, "edit")
    except Forbidden as exc:
        return forbidden(request, str(exc))
    text = request.POST.get("spec", "")
    context = editor_context(text, _check(pipeline, text))
    context.update(pipeline=pipeline, oob=True)
    return render(request, "partials/spec_check.html", context)


def save(request: HttpRequest, pipeline: Pipeline, text: str) -> tuple[bool, catalogue.Checked]:
    """Save the text as the pipeline's next version through the versions service.

    Returns (saved, the check); a refused text is recorded, as the API records one.
    """
    checked = _check(pipeline, text)
    if checked.spec is None:
        refusal_record(
            event="spec.refused",
            reason="Invalid pipeline spec from the editor",
            actor=request.user,
            address=request.META.get("REMOTE_ADDR"),
            organization=pipeline.organization_id,
            problems=[
                {key: None if v is None else str(v)[:500] for key, v in error.items()}
                for error in checked.errors[:20]
            ],
        )
        return False, checked
    version, created = services.pipeline_create_or_get(
        spec=checked.data, actor=request.user, organization=pipeline.organization_id
    )
    if created:
        messages.success(request, f"Version {version.number} of {pipeline.name} saved.")
    else:
        messages.info(request, f"Nothing saved: the text is version {version.number} as it is.")
    return True, checked
