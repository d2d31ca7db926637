"""The insights page and its CSV downloads."""

from __future__ import annotations

import csv
from datetime import date
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode

from insights import report, selectors
from insights.filters import BadFilter, Filters, parse
from orgs.middleware import organization_of

# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@login_required
def insights(request: HttpRequest) -> HttpResponse:
    organization = organization_of(request)
    pipelines = selectors.operated_pipelines(request.user, organization)
    if not pipelines and not selectors.may_see(request.user, organization):
        raise PermissionDenied(
            "Insights are for the organization's admins and the operators of its pipelines."
        )
    now = timezone.now()
    try:
        filters = parse(request.GET, list(pipelines.values()), list(report.SECTIONS), now.date())
    except BadFilter as exc:
        if request.GET.get("format") == "csv":
            return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
        context = _context(pipelines, None, now.date())
        return render(request, "insights/page.html", {**context, "error": str(exc)}, status=400)
    scope = selectors.scope(
        request.user,
        organization,
        pipelines=pipelines,
        pipeline=filters.pipeline,
        start=filters.start,
        end=filters.end,
        now=now,
    )
    if filters.format == "csv":
        return _csv(report.export(scope, filters.section), filters)
    context = _context(pipelines, filters, now.date())
    context["sections"] = [
        (section, urlencode(filters.query(format="csv", section=section.name)))
        for section in report.page(scope)
    ]
    return render(request, "insights/page.html", context)


def _context(pipelines: dict[int, str], filters: Filters | None, today: date) -> dict[str, Any]:
    return {
        "nav": "insights",
        "pipelines": sorted(pipelines.values()),
        "filters": filters,
        "today": today,
    }


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv(section: report.Section, filters: Filters) -> HttpResponse:
    name = f"firefly-{section.name}-{filters.first}-{filters.last}.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow([c.key for c in section.columns])
    for row in section.rows:
        writer.writerow([_cell(row[c.key]) for c in section.columns])
    return response
