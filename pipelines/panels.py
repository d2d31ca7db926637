"""Sections other apps add to the pipeline page, registered from their AppConfig.ready()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Each `panel(request, pipeline)` returns the section's HTML (already escaped, a rendered
# template) or "" to show nothing; pipelines knows none of those apps.
pipeline_panels: list[Callable[[Any, Any], str]] = []


def pipeline_panel(panel: Callable[[Any, Any], str]) -> None:
    """Show `panel(request, pipeline)` on the pipeline page, below its runs."""
    if panel not in pipeline_panels:
        pipeline_panels.append(panel)


def render(request: Any, pipeline: Any) -> list[str]:
    return [html for html in (panel(request, pipeline) for panel in pipeline_panels) if html]
