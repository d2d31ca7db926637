"""Reads about schedules shared by the API, the pipeline page and the admin."""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from schedules.models import Firing, Schedule


def _last(field: str) -> Subquery:
    latest = Firing.objects.filter(schedule=OuterRef("pk"), run__isnull=False).order_by(
        "-slot_at", "-id"
    )
    return Subquery(latest.values(field)[:1])


def pipeline_schedules(pipeline: Any) -> QuerySet[Schedule]:
    """The pipeline's schedules by name, each with its last run (id, status, start)."""
    return (
        Schedule.objects.filter(pipeline=pipeline)
        .select_related("pipeline")
        .annotate(
            last_run_id=_last("run_id"),
            last_run_status=_last("run__status"),
            last_fired_at=_last("fired_at"),
        )
        .order_by("name")
    )


def recent_firings(schedule: Schedule, count: int = 10) -> list[Firing]:
    return list(Firing.objects.filter(schedule=schedule).order_by("-slot_at", "-id")[:count])


def run_queued_firings(run_id: int) -> list[dict[str, Any]]:
    """Unsettled source `queued_triggers`: firings queued behind this run (a schedule with
    `overlap: queue` came due while it was going). Each starts a run of its schedule once
    this run has finished; until then it is work the run leaves behind."""
    rows = (
        Firing.objects.filter(previous_run_id=run_id, status=Firing.Status.QUEUED)
        .order_by("slot_at")
        .values("id", "schedule_id", "schedule__name", "slot_at")
    )
    return [
        {
            "id": r["id"],
            "schedule": r["schedule_id"],
            "name": r["schedule__name"],
            "slot": r["slot_at"],
        }
        for r in rows
    ]
