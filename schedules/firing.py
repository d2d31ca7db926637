"""The beat's work: fire each due schedule's slot once, and start queued firings.

Each slot is handled once: its `Firing` row is unique per (schedule, slot) and written in
the transaction that starts the run (or records why not), while that transaction holds
the schedule's row (`FOR UPDATE SKIP LOCKED`) and moves its next slot past now. A beat
restarted, or two beats at once, find the slot handled or the row taken.

A due schedule's slots up to now are collapsed: the last one is handled, the ones before
it count as missed. The last slot is on time when it came due at most
FIREFLY_SCHEDULE_GRACE_S ago; an on-time slot fires as usual (with `catch_up_once` its run
also stands for the missed ones; with `skip_missed` the missed ones are recorded as one
skip). When even the last slot is late (the beat was down), `skip_missed` records one skip
with the count and starts nothing, and `catch_up_once` starts one run for them all.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from firefly_site.celery import app
from pipelines.errors import FireflyError
from pipelines.models import Pipeline, Run
from pipelines.services import run_start
from schedules.models import Firing, Schedule
from schedules.services import audited
from schedules.timing import Timing

log = logging.getLogger(__name__)

# The beat's task, sent by name (only Celery and the dispatch modules know task modules).
FIRE_SCHEDULES = "schedules.tasks.fire_schedules"

F = Firing.Status
Why = Firing.Reason


def schedules_fire(*, now: datetime | None = None, limit: int = 200) -> int:
    """Handle every schedule due at `now` and every queued firing whose wait is over;
    returns how many firings were written or started. Each in its own transaction."""
    now = now or timezone.now()
    done = 0
    due = Schedule.objects.filter(next_fire_at__lte=now).order_by("next_fire_at")
    for pk, pipeline_id in due.values_list("pk", "pipeline_id")[:limit]:
        done += _fire_due(pk, pipeline_id, now)
    waiting = Firing.objects.filter(status=F.QUEUED).filter(
        Q(previous_run__isnull=True) | Q(previous_run__status__in=Run.FINISHED)
    )
    for pk, pipeline_id in waiting.values_list("pk", "schedule__pipeline_id")[:limit]:
        done += _release(pk, pipeline_id, now)
    return done


def _locks(pipeline_id: int) -> Pipeline | None:
    # The pipeline first, as every change of a schedule takes it (its audit chain), so no
    # two transactions wait on each other. A pipeline busy (a version being saved) is
    # left to the next beat rather than waited for.
    return Pipeline.objects.select_for_update(skip_locked=True).filter(pk=pipeline_id).first()


@transaction.atomic
def _fire_due(pk: int, pipeline_id: int, now: datetime) -> int:
    pipeline = _locks(pipeline_id)
    schedule = (
        Schedule.objects.select_for_update(skip_locked=True)
        .filter(pk=pk, pipeline_id=pipeline_id, next_fire_at__lte=now)
        .first()
    )
    if pipeline is None or schedule is None or schedule.next_fire_at is None:
        return 0
    timing = Timing(cron=schedule.cron, timezone=schedule.timezone, every_s=schedule.every_s)
    due = timing.due(schedule.next_fire_at, now)
    entries: list[tuple[str, Any, dict[str, Any]]] = []
    if not schedule.enabled:
        # Recorded once: the schedule sleeps (no next slot) until it is resumed.
        _firing(schedule, due.last, entries, F.SKIPPED, Why.PAUSED, missed=due.count - 1)
        schedule.next_fire_at = None
    else:
        on_time = now - due.last <= timedelta(seconds=settings.FIREFLY_SCHEDULE_GRACE_S)
        missed = due.count - 1 if on_time else due.count
        catch_up = schedule.missed == Schedule.Missed.CATCH_UP_ONCE
        if missed and not catch_up:
            slot = due.before_last if on_time else due.last
            assert slot is not None  # on time with slots missed: there is one before
            _firing(schedule, slot, entries, F.SKIPPED, Why.MISSED, missed=missed)
        if on_time or catch_up:
            _fire(schedule, due.last, entries, now, missed=missed if catch_up else 0)
        schedule.next_fire_at = timing.following(due.last, now)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=schedule.next_fire_at)
    audited(pipeline, entries)
    return len(entries)


def _fire(
    schedule: Schedule, slot: datetime, entries: list[Any], now: datetime, *, missed: int
) -> None:
    """The slot's run, or its place in the queue, or why it was skipped."""
    if Firing.objects.filter(schedule=schedule, status=F.QUEUED).exists():
        # One firing waits at most: a slow run does not pile up a backlog behind it.
        _firing(
            schedule,
            slot,
            entries,
            F.SKIPPED,
            Why.OVERLAP,
            missed=missed,
            detail="a firing of this schedule is already queued",
        )
        return
    previous = (
        Firing.objects.filter(schedule=schedule, run__isnull=False)
        .select_related("run")
        .order_by("-slot_at", "-id")
        .first()
    )
    going = previous is not None and previous.run is not None and not previous.run.is_finished
    if going and schedule.overlap == Schedule.Overlap.SKIP:
        assert previous is not None
        _firing(
            schedule,
            slot,
            entries,
            F.SKIPPED,
            Why.OVERLAP,
            missed=missed,
            previous_run=previous.run,
            detail=f"run {previous.run_id} is still going",
        )
    elif going and schedule.overlap == Schedule.Overlap.QUEUE:
        assert previous is not None
        _firing(
            schedule,
            slot,
            entries,
            F.QUEUED,
            missed=missed,
            previous_run=previous.run,
            detail=f"waits for run {previous.run_id}",
        )
    else:
        firing = _firing(schedule, slot, entries, F.FIRED, missed=missed, record=False)
        if firing is not None:
            _start(schedule, firing, entries, now)


def _firing(
    schedule: Schedule,
    slot: datetime,
    entries: list[Any],
    status: str,
    reason: str = "",
    *,
    missed: int = 0,
    previous_run: Run | None = None,
    detail: str = "",
    record: bool = True,
) -> Firing | None:
    """Write the slot's firing row, and its audit entry unless the run is still to come;
    None when the slot was handled already (the row exists)."""
    try:
        with transaction.atomic():
            firing = Firing.objects.create(
                organization_id=schedule.organization_id,
                schedule=schedule,
                slot_at=slot,
                status=status,
                reason=reason,
                missed=missed,
                previous_run=previous_run,
                detail=detail,
            )
    except IntegrityError:
        log.info("schedule %s: slot %s was handled already", schedule.pk, slot.isoformat())
        return None
    if record:
        event = "trigger.queued" if status == F.QUEUED else "trigger.skipped"
        entries.append((event, None, _data(schedule, firing)))
    return firing


def _data(schedule: Schedule, firing: Firing) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schedule": schedule.pk,
        "name": schedule.name,
        "slot": firing.slot_at.isoformat(),
    }
    if firing.reason:
        data["why"] = firing.reason
    if firing.missed:
        data["missed"] = firing.missed
    if firing.previous_run_id:
        data["previous_run"] = firing.previous_run_id
    if firing.detail:
        data["detail"] = firing.detail
    if firing.run_id:
        data["run"] = firing.run_id
    return data


def _start(schedule: Schedule, firing: Firing, entries: list[Any], now: datetime) -> None:
    """Start the firing's run as Firefly itself, naming the schedule; a refusal (the
    inputs no longer fit a newer input schema, say) is recorded as a skip."""
    trigger = {
        "kind": "schedule",
        "schedule": schedule.pk,
        "name": schedule.name,
        "slot": firing.slot_at.isoformat(),
        **({"missed": firing.missed} if firing.missed else {}),
    }
    try:
        with transaction.atomic():
            run = run_start(
                pipeline=schedule.pipeline.name,
                inputs=schedule.inputs,
                organization=schedule.organization_id,
                trigger=trigger,
            )
    except FireflyError as exc:
        firing.status, firing.reason, firing.detail = F.SKIPPED, Why.REFUSED, exc.message[:2000]
        firing.save(update_fields=["status", "reason", "detail"])
        entries.append(("trigger.skipped", None, _data(schedule, firing)))
        return
    firing.status, firing.run, firing.fired_at = F.FIRED, run, now
    firing.save(update_fields=["status", "run", "fired_at"])
    entries.append(("trigger.fired", None, _data(schedule, firing)))


@transaction.atomic
def _release(pk: int, pipeline_id: int, now: datetime) -> int:
    """Start a queued firing whose previous run has finished (or was purged)."""
    pipeline = _locks(pipeline_id)
    firing = (
        Firing.objects.select_for_update(skip_locked=True)
        .select_related("schedule", "schedule__pipeline")
        .filter(pk=pk, status=F.QUEUED)
        .first()
    )
    if pipeline is None or firing is None:
        return 0
    previous = firing.previous_run
    if previous is not None and not previous.is_finished:
        return 0
    entries: list[tuple[str, Any, dict[str, Any]]] = []
    schedule = firing.schedule
    if not schedule.enabled:
        firing.status, firing.reason = F.SKIPPED, Why.PAUSED
        firing.save(update_fields=["status", "reason"])
        entries.append(("trigger.skipped", None, _data(schedule, firing)))
    else:
        _start(schedule, firing, entries, now)
    audited(pipeline, entries)
    return 1


def release_after(event: str, payload: dict[str, Any]) -> None:
    """`run.finished` hook (after commit): a firing queued behind that run need not wait
    for the next beat; the task it sends does what the beat would (and a duplicate finds
    the firing started)."""
    run_id = payload.get("run")
    if run_id and Firing.objects.filter(previous_run_id=run_id, status=F.QUEUED).exists():
        app.send_task(FIRE_SCHEDULES)
