"""Read queries shared by commands, pages, the API and admin."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from pipelines import permissions, states
from pipelines.models import AuditEntry, Checkpoint, Pipeline, PipelineVersion, Run, StepRun
from pipelines.states import StepState
from pipelines.versions import version_spec


def may_operate(user: Any, run: Run) -> bool:
    """Whether the pages offer cancel, resume, fork and acknowledge (the services decide)."""
    return permissions.is_person(user) and permissions.may_operate(user, run)


def run_steps(run: Run) -> QuerySet[StepRun]:
    """Every attempt of every step of a run, in creation order."""
    return StepRun.objects.filter(run=run).order_by("id")


def current_steps(run: Run) -> list[StepRun]:
    """The latest attempt of each step, in the pipeline's execution order."""
    latest = states.latest((step.step_name, step) for step in run_steps(run))
    order = version_spec(run.pipeline_version_id).order
    return [latest[name] for name in order if name in latest]


def current_states(run: Run, steps: Iterable[StepRun] | None = None) -> dict[str, StepState]:
    """Each step's latest attempt as the engine and the DAG picture see it.

    `steps` are the run's `current_steps` when the caller has them already.
    """
    steps = current_steps(run) if steps is None else steps
    return {s.step_name: StepState(s.pk, s.status, s.generation, s.attempt) for s in steps}


# --- pages ----------------------------------------------------------------------------

DONE_STATUSES = tuple(sorted(states.DONE))


def runs_list(*, status: str = "", pipeline: str = "") -> QuerySet[Run]:
    """Runs newest first with `steps_total` and `steps_done` computed by the database.

    A step counts as done when its latest attempt succeeded or was skipped, so a roll
    back lowers the progress again. "Latest" is the rule of `states.is_later`, in SQL:
    no attempt of the step has a higher (generation, attempt).
    """
    newer = StepRun.objects.filter(run=OuterRef("run"), step_name=OuterRef("step_name")).filter(
        Q(generation__gt=OuterRef("generation"))
        | Q(generation=OuterRef("generation"), attempt__gt=OuterRef("attempt"))
    )
    done = (
        StepRun.objects.filter(run=OuterRef("pk"), status__in=DONE_STATUSES)
        .exclude(Exists(newer))
        .order_by()
        .values("run")
        .annotate(n=Count("pk"))
        .values("n")
    )
    total = (
        StepRun.objects.filter(run=OuterRef("pk"))
        .order_by()
        .values("run")
        .annotate(n=Count("step_name", distinct=True))
        .values("n")
    )
    runs = (
        Run.objects.select_related("pipeline_version__pipeline", "created_by")
        .defer("inputs", "output", "pipeline_version__spec")
        .annotate(
            steps_done=Coalesce(Subquery(done, output_field=IntegerField()), 0),
            steps_total=Coalesce(Subquery(total, output_field=IntegerField()), 0),
        )
        .order_by("-created_at", "-id")
    )
    if status:
        runs = runs.filter(status=status)
    if pipeline:
        runs = runs.filter(pipeline_version__pipeline__name=pipeline)
    return runs


def run_detail(run_id: int) -> Run | None:
    return (
        Run.objects.select_related("pipeline_version__pipeline", "created_by", "forked_from")
        .filter(pk=run_id)
        .first()
    )


def run_checkpoints(run: Run) -> QuerySet[Checkpoint]:
    return Checkpoint.objects.filter(run=run).order_by("-seq")


def run_audit(run: Run) -> QuerySet[AuditEntry]:
    """The run's audit trail, newest first (served by the unique (run, seq) index)."""
    return (
        AuditEntry.objects.filter(run=run)
        .defer("inputs", "outputs", "prev_hash", "hash")
        .order_by("-seq")
    )


def pipelines_list() -> QuerySet[Pipeline]:
    latest = PipelineVersion.objects.filter(pipeline=OuterRef("pk")).order_by("-number")
    return Pipeline.objects.annotate(
        latest_version=Subquery(latest.values("number")[:1]),
        run_count=Subquery(
            Run.objects.filter(pipeline_version__pipeline=OuterRef("pk"))
            .order_by()
            .values("pipeline_version__pipeline")
            .annotate(n=Count("pk"))
            .values("n"),
            output_field=IntegerField(),
        ),
    ).order_by("name")


def pipeline_versions(pipeline: Pipeline) -> QuerySet[PipelineVersion]:
    return (
        PipelineVersion.objects.filter(pipeline=pipeline)
        .select_related("created_by")
        .defer("spec")
        .order_by("-number")
    )
