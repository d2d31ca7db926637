"""Read queries shared by commands, pages, the API and admin."""

from __future__ import annotations

from django.db.models import QuerySet

from pipelines.models import Run, StepRun
from pipelines.services import version_spec


def run_steps(run: Run) -> QuerySet[StepRun]:
    """Every attempt of every step of a run, in creation order."""
    return StepRun.objects.filter(run=run).order_by("id")


def current_steps(run: Run) -> list[StepRun]:
    """The latest attempt of each step, in the pipeline's execution order."""
    latest: dict[str, StepRun] = {}
    for step in run_steps(run):
        seen = latest.get(step.step_name)
        if seen is None or (step.generation, step.attempt) > (seen.generation, seen.attempt):
            latest[step.step_name] = step
    order = version_spec(run.pipeline_version_id).order
    return [latest[name] for name in order if name in latest]
