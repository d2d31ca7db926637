"""Who may see and do what with pipelines and runs: the one place that decides.

Each rule is a django-rules predicate (`rules.test_rule(name, user, obj)`), used by the
services (which enforce them), the pages and the API (which only offer what they allow).
The queryset helpers below read the same roles in SQL, so a list shows exactly the rows
the rules let a user open; the grants-matrix test holds the two to each other.

The roles, each including the ones before it:
- in an organization (orgs.Membership): member, author (creates pipelines and
  versions), admin (members, grants, webhooks, tokens; operates every pipeline);
- on a pipeline (PipelineGrant, to a user or a group, or `member_role` for every
  member): viewer (sees runs and their data), starter (starts runs), operator (cancels,
  resumes, forks, acknowledges handoffs).
The author of a pipeline operates it; the starter of a run always sees it and may cancel,
resume and fork it. Superusers are platform operators: an admin of every organization.
Every rule first asks for membership of the object's organization: nothing crosses
organizations. `None` is Firefly itself (the reaper, on_finish, a parent run).
"""

from __future__ import annotations

from typing import Any

import rules
from django.db.models import Exists, OuterRef, Q, QuerySet

from orgs import selectors as orgs
from pipelines.models import (
    ROLE_RANK,
    Pipeline,
    PipelineGrant,
    PipelineRole,
    PipelineVersion,
    Run,
)

VIEWER = ROLE_RANK[PipelineRole.VIEWER]
STARTER = ROLE_RANK[PipelineRole.STARTER]
OPERATOR = ROLE_RANK[PipelineRole.OPERATOR]

# How far up a run's forks and handoffs separation of duties looks; lineages are short,
# this only bounds a loop over rows an attacker could not make circular anyway.
MAX_LINEAGE = 100


def is_person(actor: Any) -> bool:
    """An authenticated user; None is Firefly itself (the reaper, on_finish, a parent run)."""
    return actor is not None and bool(getattr(actor, "is_authenticated", False))


def roles_at_least(rank: int) -> list[str]:
    return [str(role) for role, r in ROLE_RANK.items() if r >= rank]


# --- a user's rank on a pipeline ------------------------------------------------------


def _grants(user: Any) -> dict[int, int]:
    """{pipeline id: best rank granted to the user or one of their groups}; one query,
    kept on the user object for the rest of the request."""
    cached = getattr(user, "_firefly_grants", None)
    if cached is None:
        cached = {}
        rows = PipelineGrant.objects.filter(
            Q(user=user) | Q(group__in=user.groups.values("pk"))
        ).values_list("pipeline_id", "role")
        for pipeline_id, role in rows:
            cached[pipeline_id] = max(cached.get(pipeline_id, 0), ROLE_RANK[role])
        user._firefly_grants = cached
    return cached


def forget(user: Any) -> None:
    """Drop what this request cached of the user's roles (after they changed)."""
    orgs.forget(user)
    if user is not None and hasattr(user, "_firefly_grants"):
        del user._firefly_grants


def pipeline_rank(user: Any, pipeline: Pipeline) -> int:
    """The user's role on the pipeline as a rank: 0 none, then viewer, starter, operator."""
    if user is None:
        return OPERATOR
    org_rank = orgs.rank_in(user, pipeline.organization_id)
    if not org_rank:
        return 0
    if org_rank >= orgs.ADMIN or pipeline.created_by_id == user.pk:
        return OPERATOR
    return max(ROLE_RANK.get(pipeline.member_role, 0), _grants(user).get(pipeline.pk, 0))


def pipeline_of(run: Run) -> Pipeline:
    """The run's pipeline: the loaded one when the caller selected it, else one query."""
    version = run._state.fields_cache.get("pipeline_version")
    if version is not None and "pipeline" in version._state.fields_cache:
        return version.pipeline
    return Pipeline.objects.only("pk", "organization_id", "created_by_id", "member_role").get(
        versions__pk=run.pipeline_version_id
    )


# --- predicates -----------------------------------------------------------------------


@rules.predicate
def firefly_itself(user: Any) -> bool:
    return user is None


@rules.predicate
def views_pipeline(user: Any, pipeline: Pipeline) -> bool:
    return pipeline_rank(user, pipeline) >= VIEWER


@rules.predicate
def starts_pipeline(user: Any, pipeline: Pipeline) -> bool:
    return pipeline_rank(user, pipeline) >= STARTER


@rules.predicate
def authors_pipeline(user: Any, pipeline: Pipeline) -> bool:
    """A new version: an author of the organization who operates the pipeline."""
    return (
        orgs.is_author(user, pipeline.organization_id) and pipeline_rank(user, pipeline) >= OPERATOR
    )


@rules.predicate
def authors_in(user: Any, organization: Any) -> bool:
    return orgs.is_author(user, getattr(organization, "pk", organization))


@rules.predicate
def administers(user: Any, organization: Any) -> bool:
    return orgs.is_admin(user, getattr(organization, "pk", organization))


@rules.predicate
def started_run(user: Any, run: Run) -> bool:
    return (
        is_person(user)
        and run.created_by_id == user.pk
        and orgs.is_member(user, run.organization_id)
    )


@rules.predicate
def views_runs_pipeline(user: Any, run: Run) -> bool:
    return pipeline_rank(user, pipeline_of(run)) >= VIEWER


@rules.predicate
def operates_runs_pipeline(user: Any, run: Run) -> bool:
    return pipeline_rank(user, pipeline_of(run)) >= OPERATOR


RULES = rules.RuleSet()
RULES.add_rule("view_pipeline", firefly_itself | views_pipeline)
RULES.add_rule("start_run", firefly_itself | starts_pipeline)
RULES.add_rule("create_version", firefly_itself | authors_pipeline)
RULES.add_rule("create_pipeline", firefly_itself | authors_in)
RULES.add_rule("manage_organization", administers)
RULES.add_rule("view_run", firefly_itself | started_run | views_runs_pipeline)
RULES.add_rule("operate_run", firefly_itself | started_run | operates_runs_pipeline)


def allowed(user: Any, rule: str, obj: Any) -> bool:
    """Whether `user` may `rule` the object (a pipeline, run or organization)."""
    return RULES.test_rule(rule, user, obj)


def may_operate(actor: Any, run: Run) -> bool:
    """Cancel, resume or fork a run, or acknowledge its handoffs."""
    return allowed(actor, "operate_run", run)


# --- the same rules as querysets ------------------------------------------------------


def pipelines_for(
    user: Any, organization_id: int | None, at_least: int = VIEWER
) -> QuerySet[Pipeline]:
    """The organization's pipelines on which the user holds at least `at_least`."""
    rank = orgs.rank_in(user, organization_id)
    if organization_id is None or not rank:
        return Pipeline.objects.none()
    found = Pipeline.objects.filter(organization_id=organization_id)
    if rank >= orgs.ADMIN:
        return found
    roles = roles_at_least(at_least)
    granted = PipelineGrant.objects.filter(pipeline=OuterRef("pk"), role__in=roles).filter(
        Q(user=user) | Q(group__in=user.groups.values("pk"))
    )
    return found.filter(Q(created_by=user) | Q(member_role__in=roles) | Exists(granted))


def runs_filter(user: Any, organization_id: int | None) -> Q:
    """The organization's runs the user may see: `view_run` in SQL."""
    rank = orgs.rank_in(user, organization_id)
    if not rank:
        return Q(pk__in=[])
    if rank >= orgs.ADMIN:
        return Q(organization_id=organization_id)
    # A subquery of version ids, not a join through the version: the filter stays on the
    # run's own columns, so a page of the newest runs is a scan of the organization's
    # (created_at, id) index that stops after the page, however many runs it holds.
    visible = PipelineVersion.objects.filter(
        pipeline__in=pipelines_for(user, organization_id).values("pk")
    ).values("pk")
    return Q(organization_id=organization_id) & (
        Q(created_by=user) | Q(pipeline_version__in=visible)
    )


def lineage_starters(run: Run) -> set[int]:
    """Who started this run or any run it descends from (forks and handoffs).

    Separation of duties checks them all: forking your own approved run, or handing
    work to another pipeline, must not make you the approver of your own change.
    """
    starters = {run.created_by_id} - {None}
    pending = [pk for pk in (run.forked_from_id, run.parent_id) if pk is not None]
    seen: set[int] = set()
    while pending and len(seen) < MAX_LINEAGE:
        pk = pending.pop()
        if pk in seen:
            continue
        seen.add(pk)
        row = (
            Run.objects.filter(pk=pk)
            .values_list("created_by_id", "forked_from_id", "parent_id")
            .first()
        )
        if row is None:
            continue
        created_by, forked_from, parent = row
        if created_by is not None:
            starters.add(created_by)
        pending.extend(p for p in (forked_from, parent) if p is not None)
    return starters  # type: ignore[return-value]
