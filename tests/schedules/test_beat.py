"""A real `celery beat` and worker: schedules fire on the clock, once per slot, skip while
the previous run waits for a person, and a downtime is caught up with one run."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines import services
from pipelines.models import AuditEntry, Run
from schedules import services as schedules
from schedules.firing import schedules_fire
from schedules.models import Firing, Schedule
from tests.conftest import wait_finished, wait_for
from tests.schedules.conftest import NIGHTLY
from tests.workers import beat_process

pytestmark = pytest.mark.worker


@pytest.fixture
def beat(worker: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A firefly_site beat`, sending the schedules' task every half second."""
    with beat_process(
        "tests.schedules.beat_settings", tmp_path / "beat-schedule", "test-beat.log"
    ) as process:
        yield process


def _runs(schedule: Schedule) -> list[Run]:
    ids = Firing.objects.filter(schedule=schedule, run__isnull=False).values("run_id")
    return list(Run.objects.filter(pk__in=ids).order_by("pk"))


def test_a_schedule_every_two_seconds_fires_once_per_slot(worker, users, beat):
    services.pipeline_create(
        spec={"name": "tick", "steps": [{"name": "a", "type": "noop"}]}, member_role="starter"
    )
    every = schedules.schedule_create(pipeline="tick", actor=users["boss"], name="often", every_s=2)
    # Down for three hours, before this beat came up: caught up with one run.
    hourly = schedules.schedule_create(
        pipeline="tick",
        actor=users["boss"],
        name="hourly",
        cron="0 * * * *",
        missed="catch_up_once",
    )
    Schedule.objects.filter(pk=hourly.pk).update(next_fire_at=timezone.now() - timedelta(hours=3))
    wait_for(lambda: len(_runs(every)) >= 3, timeout=15, message="three runs of `often`")
    time.sleep(1.0)  # the beat goes on: none more for the hourly one
    fired = list(Firing.objects.filter(schedule=every).order_by("slot_at"))
    slots = [f.slot_at for f in fired]
    assert len(slots) == len(set(slots))
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(slots)}
    assert gaps <= {2.0, 4.0}, gaps  # one slot each two seconds (a busy beat may collapse two)
    for run in _runs(every):
        if run.is_finished:
            assert run.status == Run.Status.SUCCEEDED
    [caught_up] = Firing.objects.filter(schedule=hourly)
    assert caught_up.status == "fired"
    assert caught_up.missed >= 3
    assert len(_runs(hourly)) == 1


def test_skip_starts_no_second_run_while_the_first_waits_for_an_approval(worker, users, beat):
    services.pipeline_create(spec=NIGHTLY, member_role="starter")
    schedule = schedules.schedule_create(
        pipeline="nightly",
        actor=users["boss"],
        name="often",
        every_s=2,
        inputs={"target": "prod"},
        overlap="skip",
    )

    def waiting() -> Run | None:
        runs = _runs(schedule)
        return runs[0] if runs and Run.objects.get(pk=runs[0].pk).status == "waiting" else None

    first = wait_for(waiting, timeout=15, message="the first run to wait for its review")
    wait_for(
        lambda: Firing.objects.filter(schedule=schedule, reason="overlap").count() >= 2,
        timeout=10,
        message="two slots skipped for the overlap",
    )
    assert _runs(schedule) == [first]
    skipped = AuditEntry.objects.filter(
        pipeline__name="nightly", run__isnull=True, event="trigger.skipped"
    )
    assert {e.data["why"] for e in skipped} == {"overlap"}
    assert {e.data["previous_run"] for e in skipped} == {first.pk}


def test_a_queued_firing_starts_when_the_run_it_waits_for_finishes(worker, users):
    """No beat here: the run's end itself sends the firing on (a `run.finished` hook)."""
    services.pipeline_create(spec=NIGHTLY, member_role="starter")
    schedule = schedules.schedule_create(
        pipeline="nightly",
        actor=users["boss"],
        name="queued",
        every_s=60,
        inputs={"target": "prod"},
        overlap="queue",
    )
    schedules_fire(now=schedule.next_fire_at)
    [first] = _runs(schedule)
    task = wait_for(
        lambda: HumanTask.objects.filter(run=first, status="open").first(),
        timeout=15,
        message="the first run's review",
    )
    schedule.refresh_from_db()
    schedules_fire(now=schedule.next_fire_at)
    queued = Firing.objects.get(schedule=schedule, status="queued")
    assert services.unsettled(first.pk).counts["queued_triggers"] == 1
    approvals.task_approve(task_id=task.pk, user=users["r1"])
    wait_finished(first)
    wait_for(
        lambda: Firing.objects.get(pk=queued.pk).run_id is not None,
        timeout=15,
        message="the queued firing to start its run",
    )
    second = Firing.objects.get(pk=queued.pk).run
    assert second is not None
    assert second.created_at >= Run.objects.get(pk=first.pk).finished_at
