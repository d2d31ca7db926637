"""Schedules: create, change, pause, resume, delete, and keep a spec's own in step.

Seeing a pipeline's schedules takes its starter role (`start_run`): they hold run inputs
and start runs. Changing them takes what a new version takes (`create_version`: an
author of the organization who operates the pipeline), since a schedule is part of how
the pipeline behaves and the spec's own come with versions. A pipeline the user may not
see answers as if it did not exist; other refusals are recorded (`schedule.refused`).
Every change is an entry in the pipeline's own audit chain, in the changing transaction.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from orgs import selectors as orgs
from pipelines import permissions
from pipelines.errors import Conflict, InvalidInput, NotFound, PermissionDenied, SpecError
from pipelines.models import Pipeline, PipelineVersion
from pipelines.schemas import compile_pattern
from pipelines.security import refusal_record
from pipelines.services import pipeline_audit, version_spec
from pipelines.spec import PipelineSpec, validate_inputs
from pipelines.spec_schedules import (
    MISSED,
    OVERLAP,
    SCHEDULE_NAME,
    ScheduleSpec,
    timing_problems,
)
from schedules.models import Firing, Schedule
from schedules.timing import Timing

# What the API, the page and the admin may set; a spec's schedule only `enabled`.
FIELDS = ("name", "cron", "timezone", "every_s", "inputs", "enabled", "overlap", "missed")
TIMING_FIELDS = ("cron", "timezone", "every_s")


# --- who may ---------------------------------------------------------------------------


def pipeline_for(actor: Any, organization: Any, name: str, *, change: bool) -> Pipeline:
    """The organization's pipeline `name`, if `actor` may see (or, `change`, edit) its
    schedules; else NotFound (not visible) or PermissionDenied (recorded)."""
    org_id = orgs.pk_of(organization)
    pipeline = Pipeline.objects.filter(organization_id=org_id, name=name).first()
    if pipeline is None or not permissions.allowed(actor, "view_pipeline", pipeline):
        raise NotFound(f"No pipeline {name!r}.")
    rule = "create_version" if change else "start_run"
    if not permissions.allowed(actor, rule, pipeline):
        reason = (
            f"You may not change the schedules of pipeline {name!r}: that takes the author"
            " role of the organization and the operator role of the pipeline."
            if change
            else f"You may not see the schedules of pipeline {name!r}: that takes its starter role."
        )
        refusal_record(
            event="schedule.refused",
            reason=reason,
            actor=actor,
            organization=org_id,
            pipeline=name,
            change=change,
        )
        raise PermissionDenied(reason)
    return pipeline


def may_change(actor: Any, pipeline: Pipeline) -> bool:
    return permissions.allowed(actor, "create_version", pipeline)


def may_see(actor: Any, pipeline: Pipeline) -> bool:
    return permissions.allowed(actor, "start_run", pipeline)


# --- checking what is asked ------------------------------------------------------------


def _checked(values: dict[str, Any], spec: PipelineSpec) -> None:
    """Raise InvalidInput naming every field of a schedule that is wrong."""
    problems: list[tuple[str, str]] = []
    name = values["name"]
    if not isinstance(name, str) or not compile_pattern(SCHEDULE_NAME).search(name):
        problems.append(("name", "lower-case letters, digits, '-' and '_', at most 100"))
    if values["overlap"] not in OVERLAP:
        problems.append(("overlap", f"one of {', '.join(OVERLAP)}"))
    if values["missed"] not in MISSED:
        problems.append(("missed", f"one of {', '.join(MISSED)}"))
    if not isinstance(values["enabled"], bool):
        problems.append(("enabled", "true or false"))
    cron, zone, every = values["cron"], values["timezone"], values["every_s"]
    if not isinstance(cron, str) or not isinstance(zone, str):
        problems.append(("cron", "cron and timezone are strings"))
    elif every is not None and (isinstance(every, bool) or not isinstance(every, int)):
        problems.append(("every_s", "a whole number of seconds"))
    else:
        problems += timing_problems(cron, zone, every)
    try:
        validate_inputs(spec, values["inputs"])
    except InvalidInput as exc:
        problems += [
            (f"inputs.{d['field']}" if d.get("field") else "inputs", d["message"])
            for d in exc.details or [{"field": "", "message": exc.message}]
        ]
    if problems:
        summary = "; ".join(f"{field}: {message}" for field, message in problems)
        raise InvalidInput(
            f"Invalid schedule: {summary}",
            details=[{"field": field, "message": message} for field, message in problems],
        )


def _latest_spec(pipeline: Pipeline) -> PipelineSpec:
    version = PipelineVersion.objects.filter(pipeline=pipeline).order_by("-number").first()
    if version is None:
        raise NotFound(f"Pipeline {pipeline.name!r} has no version.")
    return version_spec(version.pk)


# --- the pipeline's audit chain --------------------------------------------------------


def _locked(pipeline_id: int) -> Pipeline:
    return Pipeline.objects.select_for_update().get(pk=pipeline_id)


def audited(pipeline: Pipeline, entries: list[tuple[str, Any, dict[str, Any]]]) -> None:
    """Entries (event, actor, data) in the pipeline's chain; its row lock is held."""
    pipeline_audit(pipeline, entries)


def described(schedule: Schedule) -> dict[str, Any]:
    """A schedule as its audit entries record it."""
    return {
        "schedule": schedule.pk,
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "every_s": schedule.every_s,
        "inputs": schedule.inputs,
        "enabled": schedule.enabled,
        "overlap": schedule.overlap,
        "missed": schedule.missed,
        "origin": schedule.origin,
    }


def _timing(schedule: Schedule) -> Timing:
    return Timing(cron=schedule.cron, timezone=schedule.timezone, every_s=schedule.every_s)


# --- the services ----------------------------------------------------------------------


def schedule_create(
    *, pipeline: str, actor: Any, organization: Any = None, **values: Any
) -> Schedule:
    """A schedule of the pipeline made through the API, a page or the admin."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"Unknown schedule fields: {', '.join(unknown)}.")
    found = pipeline_for(actor, organization, pipeline, change=True)
    wanted = {
        "name": values.get("name", ""),
        "cron": values.get("cron") or "",
        "timezone": values.get("timezone") or "UTC",
        "every_s": values.get("every_s"),
        "inputs": values.get("inputs", {}),
        "enabled": values.get("enabled", True),
        "overlap": values.get("overlap", Schedule.Overlap.SKIP),
        "missed": values.get("missed", Schedule.Missed.SKIP_MISSED),
    }
    _checked(wanted, _latest_spec(found))
    return _create(found.pk, wanted, actor)


@transaction.atomic
def _create(pipeline_id: int, wanted: dict[str, Any], actor: Any) -> Schedule:
    pipeline = _locked(pipeline_id)
    if Schedule.objects.filter(pipeline=pipeline, name=wanted["name"]).exists():
        raise Conflict(
            f"Pipeline {pipeline.name!r} already has a schedule {wanted['name']!r}.",
            details=[{"field": "name", "message": "already taken"}],
        )
    now = timezone.now()
    schedule = Schedule(
        organization_id=pipeline.organization_id,
        pipeline=pipeline,
        origin=Schedule.Origin.MANUAL,
        created_by=actor if permissions.is_person(actor) else None,
        created_at=now,
        updated_at=now,
        **wanted,
    )
    schedule.next_fire_at = _timing(schedule).first_after(now)
    try:
        with transaction.atomic():
            schedule.save()
    except IntegrityError as exc:  # created meanwhile by someone else
        raise Conflict(f"Schedule {wanted['name']!r} already exists.") from exc
    audited(pipeline, [("schedule.created", actor, described(schedule))])
    return schedule


def schedule_update(
    *, schedule_id: int, pipeline: str, actor: Any, organization: Any = None, **changes: Any
) -> Schedule:
    """Change some of a schedule's fields (`enabled` alone: pause or resume).

    A schedule the spec defines changes with the spec's versions: only `enabled` may be
    set here (a pause lasts until a version changes that schedule's entry).
    """
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"Unknown schedule fields: {', '.join(unknown)}.")
    found = pipeline_for(actor, organization, pipeline, change=True)
    return _update(found.pk, schedule_id, changes, actor, _latest_spec(found))


@transaction.atomic
def _update(
    pipeline_id: int, schedule_id: int, changes: dict[str, Any], actor: Any, spec: PipelineSpec
) -> Schedule:
    pipeline = _locked(pipeline_id)
    schedule = (
        Schedule.objects.select_for_update().filter(pk=schedule_id, pipeline=pipeline).first()
    )
    if schedule is None:
        raise NotFound(f"No schedule {schedule_id} of pipeline {pipeline.name!r}.")
    changed = {k: v for k, v in changes.items() if getattr(schedule, k) != v}
    if schedule.origin == Schedule.Origin.SPEC and set(changed) - {"enabled"}:
        raise Conflict(
            f"Schedule {schedule.name!r} is defined by the pipeline's spec: change it in a new"
            " version (here it may only be paused or resumed).",
            details=[{"field": f, "message": "set by the spec"} for f in sorted(changed)],
        )
    if not changed:
        return schedule
    wanted = {field: changed.get(field, getattr(schedule, field)) for field in FIELDS}
    if "cron" in changed and wanted["cron"] and "every_s" not in changed:
        wanted["every_s"] = None  # a cron expression replaces an interval
    if "every_s" in changed and wanted["every_s"] is not None and "cron" not in changed:
        wanted["cron"], wanted["timezone"] = "", "UTC"
    _checked(wanted, spec)
    if wanted["name"] != schedule.name and (
        Schedule.objects.filter(pipeline=pipeline, name=wanted["name"]).exists()
    ):
        raise Conflict(f"Pipeline {pipeline.name!r} already has a schedule {wanted['name']!r}.")
    _apply(schedule, wanted)
    schedule.save()
    event = "schedule.updated"
    if set(changed) == {"enabled"}:
        event = "schedule.resumed" if schedule.enabled else "schedule.paused"
    audited(pipeline, [(event, actor, {**described(schedule), "changed": sorted(changed)})])
    return schedule


def _apply(schedule: Schedule, wanted: dict[str, Any]) -> None:
    """Set the fields, and the next slot when the timing changed or the schedule resumed."""
    now = timezone.now()
    retimed = any(wanted[f] != getattr(schedule, f) for f in TIMING_FIELDS)
    resumed = wanted["enabled"] and not schedule.enabled
    for field, value in wanted.items():
        setattr(schedule, field, value)
    schedule.updated_at = now
    if retimed or resumed or (schedule.enabled and schedule.next_fire_at is None):
        # Resumed: from now on, the slots of the pause are not made up.
        schedule.next_fire_at = _timing(schedule).first_after(now)


def schedule_delete(
    *, schedule_id: int, pipeline: str, actor: Any, organization: Any = None
) -> None:
    """Delete a schedule made through the API, a page or the admin (with its firings).

    A spec's schedule goes with a version that no longer lists it.
    """
    found = pipeline_for(actor, organization, pipeline, change=True)
    _delete(found.pk, schedule_id, actor)


@transaction.atomic
def _delete(pipeline_id: int, schedule_id: int, actor: Any) -> None:
    pipeline = _locked(pipeline_id)
    schedule = (
        Schedule.objects.select_for_update().filter(pk=schedule_id, pipeline=pipeline).first()
    )
    if schedule is None:
        raise NotFound(f"No schedule {schedule_id} of pipeline {pipeline.name!r}.")
    if schedule.origin == Schedule.Origin.SPEC:
        raise Conflict(
            f"Schedule {schedule.name!r} is defined by the pipeline's spec: a new version"
            " without it removes it (or pause it)."
        )
    data = described(schedule)
    queued = list(_queued(schedule))
    schedule.delete()
    audited(pipeline, [("schedule.deleted", actor, {**data, "queued_dropped": queued})])


def _queued(schedule: Schedule) -> list[int]:
    return list(
        Firing.objects.filter(schedule=schedule, status=Firing.Status.QUEUED).values_list(
            "pk", flat=True
        )
    )


# --- a spec's schedules follow its versions ---------------------------------------------


def schedules_sync(*, version: PipelineVersion, spec: PipelineSpec, actor: Any) -> None:
    """The version hook: make the pipeline's spec-defined schedules the new spec's.

    In the transaction saving the version, which holds the pipeline's row lock: a name
    taken by a schedule made elsewhere refuses the version (nothing is saved).
    """
    pipeline = version.pipeline
    existing = {s.name: s for s in Schedule.objects.select_for_update().filter(pipeline=pipeline)}
    clashes = [
        {
            "step": None,
            "field": f"schedules[{wanted.name}].name",
            "message": f"pipeline {pipeline.name!r} already has a schedule {wanted.name!r}"
            " made through the API, a page or the admin; rename one of them or delete that one",
        }
        for wanted in spec.schedules
        if wanted.name in existing and existing[wanted.name].origin != Schedule.Origin.SPEC
    ]
    if clashes:
        raise SpecError(clashes)
    entries: list[tuple[str, Any, dict[str, Any]]] = []
    because = {"version": version.number}
    for wanted in spec.schedules:
        row = existing.get(wanted.name)
        if row is None:
            row = _from_spec(pipeline, wanted, actor)
            entries.append(("schedule.created", actor, {**described(row), **because}))
        elif row.definition != wanted.definition():
            _apply(row, _spec_values(wanted))
            row.definition = wanted.definition()
            row.save()
            entries.append(("schedule.updated", actor, {**described(row), **because}))
    named = {s.name for s in spec.schedules}
    for name, row in existing.items():
        if row.origin == Schedule.Origin.SPEC and name not in named:
            data = {**described(row), **because, "queued_dropped": _queued(row)}
            row.delete()
            entries.append(("schedule.deleted", actor, data))
    audited(pipeline, entries)


def _spec_values(wanted: ScheduleSpec) -> dict[str, Any]:
    return {k: v for k, v in wanted.definition().items() if k in FIELDS}


def _from_spec(pipeline: Pipeline, wanted: ScheduleSpec, actor: Any) -> Schedule:
    now = timezone.now()
    schedule = Schedule(
        organization_id=pipeline.organization_id,
        pipeline=pipeline,
        origin=Schedule.Origin.SPEC,
        definition=wanted.definition(),
        created_by=actor if permissions.is_person(actor) else None,
        created_at=now,
        updated_at=now,
        **_spec_values(wanted),
    )
    schedule.next_fire_at = _timing(schedule).first_after(now)
    schedule.save()
    return schedule


# --- retention ---------------------------------------------------------------------------


def firings_purge(run_ids: list[int]) -> None:
    """Purge hook: firings forget the runs being deleted (the audit chain keeps them)."""
    Firing.objects.filter(run_id__in=run_ids).update(run=None)
    Firing.objects.filter(previous_run_id__in=run_ids).update(previous_run=None)
