"""Read queries shared by commands, pages, the API and admin.

Every query a person's request makes takes the user and the organization the request
acts in, and returns only what `pipelines.permissions` lets that user see there; an
organization of None (a user of none) sees nothing. Ids outside that are as if they did
not exist: the callers answer 404.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    JSONField,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from prometheus_client.core import GaugeMetricFamily

from orgs import selectors as orgs
from pipelines import permissions, states
from pipelines.models import (
    AuditEntry,
    Checkpoint,
    HandoffEnvelope,
    Pipeline,
    PipelineVersion,
    Run,
    StepRun,
)
from pipelines.states import StepState
from pipelines.versions import version_spec


def may_operate(user: Any, run: Run) -> bool:
    """Whether the pages offer cancel, resume, fork and acknowledge (the services decide)."""
    return permissions.is_person(user) and permissions.may_operate(user, run)


def _org(organization: Any) -> int | None:
    return getattr(organization, "pk", organization)


# A page of a list reads its rows from one table, then what they name by primary key.
# Joining the version and pipeline into the list's own query looks free, but under
# row-level security the planner sees each table's policy and the list's organization
# filter as independent, expects a row or two, and joins every run of the organization
# before sorting (100-300 ms at 10,000 tasks); by primary key it is a few index lookups.


def versions_by_key() -> Prefetch:
    """Prefetch of `pipeline_version` with its pipeline, for lists of runs."""
    return Prefetch(
        "pipeline_version",
        queryset=PipelineVersion.objects.select_related("pipeline").only(
            "number", "pipeline__name"
        ),
    )


def runs_by_key() -> Prefetch:
    """Prefetch of `run` with what a list of its tasks shows (the pipeline's name)."""
    return Prefetch(
        "run",
        queryset=Run.objects.select_related("pipeline_version__pipeline").only(
            "pipeline_version__number", "pipeline_version__pipeline__name"
        ),
    )


def visible_runs(user: Any, organization: Any) -> QuerySet[Run]:
    """The organization's runs the user may see (`view_run`)."""
    return Run.objects.filter(permissions.runs_filter(user, _org(organization)))


def visible_pipelines(user: Any, organization: Any, at_least: int = 1) -> QuerySet[Pipeline]:
    return permissions.pipelines_for(user, _org(organization), at_least)


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


def runs_list(
    user: Any, organization: Any, *, status: str = "", pipeline: str = ""
) -> QuerySet[Run]:
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
        visible_runs(user, organization)
        .select_related("created_by")
        .prefetch_related(versions_by_key())
        .defer("inputs", "output")
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


def runs(user: Any, organization: Any) -> QuerySet[Run]:
    """Runs newest first, with what a list of them shows (the API's)."""
    return (
        visible_runs(user, organization)
        .select_related("created_by")
        .prefetch_related(versions_by_key())
        .order_by("-created_at", "-id")
    )


def run_details(user: Any, organization: Any) -> QuerySet[Run]:
    """Runs with their children and handoffs: one query each, however many there are."""
    return runs(user, organization).prefetch_related(
        Prefetch("children", queryset=child_runs()), Prefetch("envelopes", queryset=all_handoffs())
    )


def run_keys(user: Any, organization: Any) -> QuerySet[Run]:
    """Runs with nothing read but their key: enough to answer 404 or to filter by."""
    return visible_runs(user, organization).only("pk")


def run_detail(user: Any, organization: Any, run_id: int) -> Run | None:
    return (
        visible_runs(user, organization)
        .select_related("pipeline_version__pipeline", "created_by", "forked_from")
        .filter(pk=run_id)
        .first()
    )


def run_checkpoints(run: Run, *, newest_first: bool = True) -> QuerySet[Checkpoint]:
    return Checkpoint.objects.filter(run=run).order_by("-seq" if newest_first else "seq")


# The entries of a step visit: their `inputs` name what the visit read, by hash.
STEP_VISITS = ("step.succeeded", "step.failed", "step.waiting", "step.outcome_dropped")


def run_audit(run: Run) -> QuerySet[AuditEntry]:
    """The run's audit trail, newest first (served by the unique (run, seq) index).

    `consumed` is a step visit's digest of what it read (small: hashes and ids); the other
    entries' inputs (a run's own, possibly large) stay unread.
    """
    return (
        AuditEntry.objects.filter(run=run)
        .defer("inputs", "outputs", "prev_hash", "hash")
        .annotate(
            consumed=Case(
                When(event__in=STEP_VISITS, then=F("inputs")),
                default=Value(None),
                output_field=JSONField(),
            )
        )
        .order_by("-seq")
    )


def consumed_by_step(run: Run) -> dict[str, dict[str, Any]]:
    """What each step's latest visit read (run inputs and upstream outputs, by hash)."""
    rows = (
        AuditEntry.objects.filter(run=run, event__in=STEP_VISITS, inputs__isnull=False)
        .order_by("seq")
        .values_list("step_name", "inputs")
    )
    return {name: digest for name, digest in rows if isinstance(digest, dict)}


def audit_entries(user: Any, organization: Any) -> QuerySet[AuditEntry]:
    """The organization's audit entries the user may see, with their pipeline's name (the
    API shows every field): all of them for its admins; else those of the pipelines the
    user views and of the runs they started."""
    org = _org(organization)
    if org is None or not orgs.is_member(user, org):
        return AuditEntry.objects.none()
    entries = AuditEntry.objects.select_related("pipeline").filter(organization_id=org)
    if orgs.is_admin(user, org):
        return entries
    return entries.filter(
        Q(pipeline__in=visible_pipelines(user, org).values("pk")) | Q(run__created_by=user)
    )


def run_audit_in_order(run: Run) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.select_related("pipeline").filter(run=run).order_by("seq")


# --- handoffs -------------------------------------------------------------------------


def child_runs() -> QuerySet[Run]:
    """Runs started by handoffs, as the run pages, the API and the admin list them."""
    return (
        Run.objects.select_related("pipeline_version__pipeline")
        .only(
            "pk",
            "status",
            "parent",
            "created_at",
            "finished_at",
            "pipeline_version__number",
            "pipeline_version__pipeline__name",
        )
        .order_by("id")
    )


def run_children(run: Run) -> list[Run]:
    return list(child_runs().filter(parent=run))


def all_handoffs() -> QuerySet[HandoffEnvelope]:
    """Envelopes with what their status and links need, in the order they were made."""
    return HandoffEnvelope.objects.select_related("acknowledged_by", "child_run").order_by("id")


def handoffs(user: Any, organization: Any) -> QuerySet[HandoffEnvelope]:
    """The envelopes of the runs the user may see."""
    return all_handoffs().filter(origin_run__in=visible_runs(user, organization).values("pk"))


def run_handoffs(run: Run) -> QuerySet[HandoffEnvelope]:
    """The work a run handed off."""
    return all_handoffs().filter(origin_run=run)


def handoff_origin(run: Run) -> HandoffEnvelope | None:
    """The envelope a run was started for, if a handoff started it."""
    if run.parent_id is None:
        return None
    return (
        HandoffEnvelope.objects.filter(child_run=run)
        .only("pk", "origin_run_id", "origin_step")
        .first()
    )


def handoff_origin_run_id(user: Any, organization: Any, envelope_id: int) -> int | None:
    return (
        handoffs(user, organization)
        .filter(pk=envelope_id)
        .values_list("origin_run_id", flat=True)
        .first()
    )


def handoffs_with_status(
    queryset: QuerySet[HandoffEnvelope], status: str
) -> QuerySet[HandoffEnvelope]:
    return queryset.filter(HandoffEnvelope.status_filter(status))


# --- pipelines ------------------------------------------------------------------------


def pipeline_names(user: Any, organization: Any) -> QuerySet[Pipeline, str]:
    return visible_pipelines(user, organization).order_by("name").values_list("name", flat=True)


def pipeline_by_name(user: Any, organization: Any, name: str) -> Pipeline | None:
    return visible_pipelines(user, organization).filter(name=name).first()


def pipelines_with_latest_version(user: Any, organization: Any) -> QuerySet[Pipeline]:
    """Pipelines by name, each with its latest version number (the API's list)."""
    return (
        visible_pipelines(user, organization)
        .annotate(latest_version=Max("versions__number"))
        .order_by("name")
    )


def version_with_pipeline(version_id: int) -> PipelineVersion:
    return PipelineVersion.objects.select_related("pipeline").get(pk=version_id)


def pipelines_list(user: Any, organization: Any) -> QuerySet[Pipeline]:
    latest = PipelineVersion.objects.filter(pipeline=OuterRef("pk")).order_by("-number")
    return (
        visible_pipelines(user, organization)
        .annotate(
            latest_version=Subquery(latest.values("number")[:1]),
            run_count=Subquery(
                Run.objects.filter(pipeline_version__pipeline=OuterRef("pk"))
                .order_by()
                .values("pipeline_version__pipeline")
                .annotate(n=Count("pk"))
                .values("n"),
                output_field=IntegerField(),
            ),
        )
        .order_by("name")
    )


def pipeline_versions(pipeline: Pipeline) -> QuerySet[PipelineVersion]:
    return (
        PipelineVersion.objects.filter(pipeline=pipeline)
        .select_related("created_by")
        .defer("spec")
        .order_by("-number")
    )


# What `firefly_steps` reports (firefly_site/metrics.py): the work waiting and in hand.
GAUGED_STEP_STATES = (states.QUEUED, states.RUNNING)


def step_gauges() -> Iterator[GaugeMetricFamily]:
    """Steps queued and running now, across organizations (read at each scrape)."""
    gauge = GaugeMetricFamily("firefly_steps", "Steps queued or running", labels=["status"])
    counted = dict(
        StepRun.objects.filter(status__in=GAUGED_STEP_STATES)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    for status in GAUGED_STEP_STATES:
        gauge.add_metric([status], counted.get(status, 0))
    yield gauge
