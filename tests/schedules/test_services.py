"""The schedule services and the beat's firing: idempotent slots, overlap, downtime, pauses,
the spec's schedules across versions, and who may change them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from pipelines import services
from pipelines.errors import Conflict, InvalidInput, NotFound, PermissionDenied, SpecError
from pipelines.models import AuditEntry, Run, SecurityEvent
from schedules import services as schedules
from schedules.firing import schedules_fire
from schedules.models import Firing, Schedule
from tests.approvals.conftest import drive
from tests.schedules.conftest import NIGHTLY, fire_at, slot_later


def pipeline_events(name: str, prefix: str = "") -> list[tuple[str, Any]]:
    entries = AuditEntry.objects.filter(
        pipeline__name=name, run__isnull=True, event__startswith=prefix
    ).order_by("seq")
    return [(e.event, e.data) for e in entries]


def runs_of(schedule: Schedule) -> list[Run]:
    ids = Firing.objects.filter(schedule=schedule, run__isnull=False).values("run_id")
    return list(Run.objects.filter(pk__in=ids).order_by("pk"))


# --- firing ----------------------------------------------------------------------------


def test_a_due_slot_starts_one_run_that_names_its_schedule(make_schedule):
    schedule = make_schedule()
    moment = slot_later(schedule, 1)
    assert schedules_fire(now=moment) == 1
    [run] = runs_of(schedule)
    assert run.inputs == {"target": "prod"}
    assert run.created_by is None  # started by Firefly, for the schedule
    created = AuditEntry.objects.get(run=run, event="run.created")
    assert created.data["trigger"]["schedule"] == schedule.pk
    assert created.data["trigger"]["name"] == "every-minute"
    [(event, data)] = pipeline_events("nightly", "trigger.")
    assert event == "trigger.fired"
    assert data["run"] == run.pk
    assert data["schedule"] == schedule.pk
    schedule.refresh_from_db()
    assert schedule.next_fire_at is not None
    assert schedule.next_fire_at > moment


def test_the_same_slot_twice_starts_one_run(make_schedule):
    schedule = make_schedule()
    moment = slot_later(schedule, 1)
    slot = schedule.next_fire_at
    schedules_fire(now=moment)
    schedules_fire(now=moment)  # a second beat in the same minute
    # A beat restarted from an old state: the schedule says the slot is still to come.
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=slot)
    schedules_fire(now=moment)
    assert len(runs_of(schedule)) == 1
    assert Firing.objects.filter(schedule=schedule).count() == 1
    assert len(pipeline_events("nightly", "trigger.")) == 1


def test_overlap_skip_records_why_and_starts_nothing(make_schedule):
    schedule = make_schedule(overlap="skip")
    fire_at(schedule)
    [first] = runs_of(schedule)  # pending: no worker here, it is still going
    fire_at(schedule)
    assert runs_of(schedule) == [first]
    skipped = Firing.objects.get(schedule=schedule, status="skipped")
    assert skipped.reason == "overlap"
    assert skipped.previous_run_id == first.pk
    event, data = pipeline_events("nightly", "trigger.")[-1]
    assert event == "trigger.skipped"
    assert data["why"] == "overlap"
    assert data["previous_run"] == first.pk


def test_overlap_start_anyway_starts_a_second_run(make_schedule):
    schedule = make_schedule(overlap="start_anyway")
    fire_at(schedule)
    fire_at(schedule)
    assert len(runs_of(schedule)) == 2


def test_overlap_queue_waits_for_the_previous_run_and_is_its_unsettled_work(make_schedule):
    schedule = make_schedule(overlap="queue")
    fire_at(schedule)
    [first] = runs_of(schedule)
    fire_at(schedule)
    queued = Firing.objects.get(schedule=schedule, status="queued")
    assert queued.previous_run_id == first.pk
    found = services.unsettled(first.pk)
    assert [item["id"] for item in found.items["queued_triggers"]] == [queued.pk]
    assert "1 queued trigger" in found.summary
    # A third slot while one waits: skipped, no backlog.
    fire_at(schedule)
    assert Firing.objects.filter(schedule=schedule, status="queued").count() == 1
    assert Firing.objects.filter(schedule=schedule, reason="overlap").count() == 1
    # Nothing starts while the first goes on.
    schedules_fire(now=slot_later(schedule, -1))
    assert runs_of(schedule) == [first]
    services.run_cancel(run_id=first.pk)
    schedules_fire(now=slot_later(schedule, -1))
    queued.refresh_from_db()
    assert queued.status == "fired"
    assert queued.run_id is not None
    assert [r.pk for r in runs_of(schedule)] == [first.pk, queued.run_id]
    assert services.unsettled(first.pk).items["queued_triggers"] == []
    assert pipeline_events("nightly", "trigger.")[-1][0] == "trigger.fired"


HOURLY_DOWNTIME = datetime(2026, 5, 4, 12, 30, tzinfo=UTC)


def _down_for_five_hours(schedule: Schedule) -> None:
    Schedule.objects.filter(pk=schedule.pk).update(
        next_fire_at=datetime(2026, 5, 4, 7, 0, tzinfo=UTC)
    )


def test_catch_up_once_fires_one_run_for_every_missed_slot(make_schedule):
    schedule = make_schedule(cron="0 * * * *", missed="catch_up_once")
    _down_for_five_hours(schedule)
    schedules_fire(now=HOURLY_DOWNTIME)
    schedules_fire(now=HOURLY_DOWNTIME + timedelta(seconds=5))
    [run] = runs_of(schedule)
    firing = Firing.objects.get(schedule=schedule)
    # 07:00 to 12:00, all late (12:00 came due half an hour ago): one run stands for six.
    assert firing.status == "fired"
    assert firing.missed == 6
    assert firing.slot_at == datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    assert AuditEntry.objects.get(run=run, event="run.created").data["trigger"]["missed"] == 6
    schedule.refresh_from_db()
    assert schedule.next_fire_at == datetime(2026, 5, 4, 13, 0, tzinfo=UTC)


def test_skip_missed_records_one_skip_with_the_count_and_fires_none(make_schedule):
    schedule = make_schedule(cron="0 * * * *", missed="skip_missed")
    _down_for_five_hours(schedule)
    schedules_fire(now=HOURLY_DOWNTIME)
    assert runs_of(schedule) == []
    [(event, data)] = pipeline_events("nightly", "trigger.")
    assert event == "trigger.skipped"
    assert data["why"] == "missed"
    assert data["missed"] == 6


def test_skip_missed_still_fires_the_slot_that_is_on_time(make_schedule):
    schedule = make_schedule(every_s=60, missed="skip_missed")
    moment = slot_later(schedule, 10 * 60 + 5)  # ten slots late, the last 5 s ago
    schedules_fire(now=moment)
    assert len(runs_of(schedule)) == 1
    events = pipeline_events("nightly", "trigger.")
    assert [e for e, _ in events] == ["trigger.skipped", "trigger.fired"]
    assert events[0][1]["missed"] == 10


def test_a_paused_schedule_records_the_pause_once_and_fires_nothing(make_schedule, author):
    schedule = make_schedule()
    schedules.schedule_update(
        schedule_id=schedule.pk, pipeline="nightly", actor=author, enabled=False
    )
    later = slot_later(schedule, 3600)
    fire_at(schedule)
    schedules_fire(now=later)  # an hour on: the pause was recorded once, then it sleeps
    assert runs_of(schedule) == []
    [(event, data)] = pipeline_events("nightly", "trigger.")
    assert event == "trigger.skipped"
    assert data["why"] == "paused"
    schedule.refresh_from_db()
    assert schedule.next_fire_at is None
    schedules.schedule_update(
        schedule_id=schedule.pk, pipeline="nightly", actor=author, enabled=True
    )
    schedule.refresh_from_db()
    assert schedule.next_fire_at is not None
    fire_at(schedule)
    assert len(runs_of(schedule)) == 1
    changes = [e for e, _ in pipeline_events("nightly", "schedule.")]
    assert changes == ["schedule.created", "schedule.paused", "schedule.resumed"]


def test_inputs_a_newer_input_schema_refuses_are_a_recorded_skip(make_schedule, author):
    schedule = make_schedule()
    stricter = {
        **NIGHTLY,
        "input_schema": {**NIGHTLY["input_schema"], "required": ["target", "by"]},
    }
    services.pipeline_create(spec=stricter, actor=author)
    fire_at(schedule)
    assert runs_of(schedule) == []
    firing = Firing.objects.get(schedule=schedule)
    assert firing.reason == "refused"
    assert "by" in firing.detail


# --- changing schedules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 2 * *"}, "cron"),
        ({"cron": "0 2 * * *", "every_s": 60}, "cron"),
        ({"cron": "0 2 * * *", "timezone": "Europe/Atlantis"}, "timezone"),
        ({"every_s": 0}, "every_s"),
        ({"every_s": 60, "inputs": {"target": 7}}, "inputs.target"),
        ({"every_s": 60, "inputs": {}}, "inputs.target"),
        ({"every_s": 60, "overlap": "sometimes"}, "overlap"),
        ({"every_s": 60, "name": "Not A Slug"}, "name"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(nightly, author, values, field):
    values = {"name": "bad", "inputs": {"target": "prod"}, **values}
    with pytest.raises(InvalidInput) as refused:
        schedules.schedule_create(pipeline=nightly, actor=author, **values)
    assert field in [d["field"] for d in refused.value.details], refused.value.details
    assert not Schedule.objects.exists()


def test_a_member_who_is_no_author_is_refused_and_it_is_recorded(nightly, users):
    with pytest.raises(PermissionDenied):
        schedules.schedule_create(
            pipeline=nightly,
            actor=users["starter"],
            name="mine",
            every_s=60,
            inputs={"target": "prod"},
        )
    refusal = SecurityEvent.objects.get(event="schedule.refused")
    assert refusal.actor == users["starter"]
    assert refusal.data["pipeline"] == "nightly"
    assert not Schedule.objects.exists()


def test_another_organization_finds_no_pipeline(nightly, elsewhere):
    with pytest.raises(NotFound):
        schedules.schedule_create(
            pipeline=nightly,
            actor=elsewhere["admin"],
            organization=elsewhere["org"],
            name="x",
            every_s=60,
            inputs={"target": "prod"},
        )


def test_changing_the_timing_moves_the_next_slot(make_schedule, author):
    schedule = make_schedule(every_s=60)
    changed = schedules.schedule_update(
        schedule_id=schedule.pk,
        pipeline="nightly",
        actor=author,
        cron="30 2 * * *",
        timezone="Europe/Paris",
    )
    assert changed.every_s is None
    assert changed.cron == "30 2 * * *"
    assert changed.next_fire_at.astimezone(changed.next_fire_at.tzinfo).minute == 30


# --- the spec's schedules -----------------------------------------------------------------


def with_schedules(*entries: dict[str, Any]) -> dict[str, Any]:
    return {**NIGHTLY, "schedules": list(entries)}


def test_a_new_version_keeps_the_specs_schedules_in_step(nightly, author, make_schedule):
    manual = make_schedule(name="by-hand")
    services.pipeline_create(
        spec=with_schedules(
            {
                "name": "nightly",
                "cron": "0 2 * * *",
                "timezone": "Europe/Paris",
                "inputs": {"target": "prod"},
            },
            {
                "name": "hourly",
                "cron": "0 * * * *",
                "inputs": {"target": "stage"},
                "overlap": "queue",
            },
        ),
        actor=author,
    )
    found = {s.name: s for s in Schedule.objects.all()}
    assert set(found) == {"nightly", "hourly", "by-hand"}
    assert found["nightly"].origin == "spec"
    assert found["nightly"].timezone == "Europe/Paris"
    assert found["hourly"].overlap == "queue"
    # Paused by an operator; a version that leaves it as it was keeps the pause.
    schedules.schedule_update(
        schedule_id=found["hourly"].pk, pipeline="nightly", actor=author, enabled=False
    )
    services.pipeline_create(
        spec=with_schedules(
            {
                "name": "nightly",
                "cron": "0 3 * * *",
                "timezone": "Europe/Paris",
                "inputs": {"target": "prod"},
            },
            {
                "name": "hourly",
                "cron": "0 * * * *",
                "inputs": {"target": "stage"},
                "overlap": "queue",
            },
        ),
        actor=author,
    )
    found = {s.name: s for s in Schedule.objects.all()}
    assert found["nightly"].cron == "0 3 * * *"
    assert found["hourly"].enabled is False
    services.pipeline_create(spec=with_schedules(), actor=author)
    assert list(Schedule.objects.values_list("name", flat=True)) == ["by-hand"]
    manual.refresh_from_db()
    events = [
        (e, d.get("name"), d.get("version")) for e, d in pipeline_events("nightly", "schedule.")
    ]
    assert ("schedule.created", "nightly", 2) in events
    assert ("schedule.updated", "nightly", 3) in events
    assert ("schedule.deleted", "hourly", 4) in events


def test_a_spec_schedule_may_be_paused_but_not_redefined_or_deleted_here(nightly, author):
    services.pipeline_create(
        spec=with_schedules({"name": "nightly", "cron": "0 2 * * *", "inputs": {"target": "p"}}),
        actor=author,
    )
    schedule = Schedule.objects.get()
    with pytest.raises(Conflict):
        schedules.schedule_update(
            schedule_id=schedule.pk, pipeline="nightly", actor=author, cron="0 4 * * *"
        )
    with pytest.raises(Conflict):
        schedules.schedule_delete(schedule_id=schedule.pk, pipeline="nightly", actor=author)
    paused = schedules.schedule_update(
        schedule_id=schedule.pk, pipeline="nightly", actor=author, enabled=False
    )
    assert paused.enabled is False


def test_a_spec_schedule_named_like_a_manual_one_refuses_the_version(make_schedule, author):
    make_schedule(name="nightly")
    with pytest.raises(SpecError) as refused:
        services.pipeline_create(
            spec=with_schedules({"name": "nightly", "every_s": 30, "inputs": {"target": "p"}}),
            actor=author,
        )
    assert refused.value.errors[0]["field"] == "schedules[nightly].name"
    assert services.pipeline_version("nightly").number == 1
    assert Schedule.objects.get().origin == "manual"


def test_a_spec_with_bad_schedules_is_refused_with_every_problem(db):
    with pytest.raises(SpecError) as refused:
        services.pipeline_create(
            spec=with_schedules(
                {"name": "a", "cron": "0 25 * * *", "inputs": {"target": "p"}},
                {"name": "b", "every_s": 10, "timezone": "Nowhere/Town", "inputs": {}},
                {"name": "b", "cron": "@daily", "inputs": {"target": "p"}},
            )
        )
    fields = [e["field"] for e in refused.value.errors]
    assert "schedules[a].cron" in fields
    assert "schedules[b].timezone" in fields
    assert "schedules[b].inputs.target" in fields
    assert "schedules[b].name" in fields


def test_a_purged_run_leaves_its_firing_without_it(db, author):
    services.pipeline_create(
        spec={
            "name": "short-lived",
            "retention": {"runs_days": 1},
            "steps": [{"name": "a", "type": "noop"}],
        },
        member_role="starter",
    )
    schedule = schedules.schedule_create(
        pipeline="short-lived", actor=author, name="often", every_s=60
    )
    fire_at(schedule)
    [run] = runs_of(schedule)
    assert drive(run).status == Run.Status.SUCCEEDED
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=5))
    assert services.retention_apply().purged == 1
    firing = Firing.objects.get(schedule=schedule)
    assert firing.run_id is None
    assert firing.status == "fired"
    [(_, data)] = pipeline_events("short-lived", "trigger.")
    assert data["run"] == run.pk  # the audit chain still says which run it was
