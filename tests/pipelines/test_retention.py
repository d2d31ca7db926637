"""Retention: a spec's limits, erasing a run's data, purging old runs, archive segments."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from approvals import services as approvals
from approvals.models import Decision, HumanTask
from orgs.models import Membership, Organization
from pipelines import services
from pipelines.audit import chains, verify_chain
from pipelines.errors import Conflict, InvalidInput, NotFound, PermissionDenied, SpecError
from pipelines.models import (
    AuditEntry,
    Checkpoint,
    HandoffEnvelope,
    OutboxEvent,
    Pipeline,
    PipelineVersion,
    Run,
    StepRun,
)
from pipelines.services import retention
from pipelines.spec import parse_spec
from tests.approvals.conftest import drive, open_task
from webhooks.models import Webhook, WebhookDelivery

R = Run.Status

VALUE = {"name": "a", "type": "python", "config": {"callable": "tests.pipelines.callables.value"}}
REVIEW = {
    "name": "review",
    "type": "approval",
    "after": ["a"],
    "config": {"assignee_role": "reviewers", "context": {"inputs": True, "upstream": ["a"]}},
}
SECRET = "jane.doe@example.com"


def spec_errors(retention_value: Any) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(
            {"name": "p", "steps": [{"name": "a", "type": "noop"}], "retention": retention_value}
        )
    return caught.value.errors


def finished(run: Run, *, days_ago: float) -> Run:
    """Drive the run to its end here, then date its finish `days_ago` days back."""
    run = drive(run)
    assert run.is_finished, f"run {run.pk} is {run.status}"
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=days_ago))
    run.refresh_from_db()
    return run


def old_run(name: str, days_ago: float = 40, value: Any = SECRET) -> Run:
    return finished(services.run_start(pipeline=name, inputs={"value": value}), days_ago=days_ago)


def reviewed_run(name: str, users: dict[str, Any]) -> Run:
    """A run whose approval task showed the inputs and got a comment, then succeeded."""
    run = drive(services.run_start(pipeline=name, inputs={"value": SECRET}, actor=users["starter"]))
    approvals.task_approve(task_id=open_task(run).pk, user=users["r1"], comment=f"ok {SECRET}")
    return finished(run, days_ago=1)


def verify(*args: str) -> str:
    out = StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def verify_fails(*args: str) -> str:
    with pytest.raises(CommandError) as caught:
        verify(*args)
    return str(caught.value)


def holds_secret(value: Any) -> bool:
    return SECRET in json.dumps(value, default=str)


# --- the spec and the settings --------------------------------------------------------


def test_a_spec_names_its_retention_and_bad_values_are_refused_by_field() -> None:
    spec = parse_spec(
        {
            "name": "p",
            "steps": [{"name": "a", "type": "noop"}],
            "retention": {"outputs_days": 30, "runs_days": 365},
        }
    )
    assert (spec.retention.outputs_days, spec.retention.runs_days) == (30, 365)

    shorter = spec_errors({"outputs_days": 30, "runs_days": 7})
    assert shorter[0]["field"] == "retention.runs_days"
    assert "less than outputs_days (30)" in shorter[0]["message"]
    assert spec_errors({"outputs_days": 0})[0]["field"] == "retention.outputs_days"
    assert spec_errors({"runs_days": "a year"})[0]["field"] == "retention.runs_days"
    assert spec_errors({"runs_days": True})[0]["field"] == "retention.runs_days"
    assert spec_errors({"runs_days": 10**6})[0]["field"] == "retention.runs_days"
    unknown = spec_errors({"keep_days": 3})
    assert unknown[0]["field"] == "retention"
    assert "keep_days" in unknown[0]["message"]
    assert spec_errors(30)[0]["field"] == "retention"


def test_the_retention_is_kept_with_the_version_and_defaults_come_from_settings(
    make_pipeline: Any, settings: Any
) -> None:
    name = make_pipeline([VALUE], retention={"runs_days": 90})
    first = PipelineVersion.objects.get(pipeline__name=name)
    make_pipeline([VALUE], name=name, retention={"outputs_days": 5, "runs_days": 10})
    settings.FIREFLY_RETENTION_OUTPUTS_DAYS = 30
    settings.FIREFLY_RETENTION_RUNS_DAYS = None

    assert first.spec["retention"] == {"runs_days": 90}
    assert retention.version_limits(first.spec) == retention.Limits(30, 90)
    latest = PipelineVersion.objects.filter(pipeline__name=name).order_by("-number").first()
    assert retention.version_limits(latest.spec) == retention.Limits(5, 10)
    assert retention.version_limits({"name": "x"}) == retention.Limits(30, None)
    settings.FIREFLY_RETENTION_OUTPUTS_DAYS = None
    assert retention.version_limits({"name": "x"}) == retention.Limits(None, None)


# --- erasure --------------------------------------------------------------------------


@pytest.fixture
def reviewed(make_pipeline: Any, users: dict[str, Any], hand_off: Any) -> Run:
    name = make_pipeline([VALUE, REVIEW])
    run = reviewed_run(name, users)
    hand_off(run, payload={"customer": SECRET})
    payload = {"organization": "default", "run": run.pk, "output": {"value": SECRET}}
    OutboxEvent.objects.create(
        organization_id=run.organization_id, event="run.finished", payload=payload
    )
    hook = Webhook.objects.create(
        organization_id=run.organization_id, url="https://hooks.example.com/", events=["*"]
    )
    WebhookDelivery.objects.create(
        organization_id=run.organization_id, webhook=hook, event="run.finished", payload=payload
    )
    return run


def test_redact_erases_the_run_data_everywhere_and_the_chain_still_verifies(
    reviewed: Run, users: dict[str, Any]
) -> None:
    run = reviewed
    task = HumanTask.objects.get(run=run)
    before = list(AuditEntry.objects.filter(run=run).order_by("seq").values_list("seq", "hash"))
    assert holds_secret(task.context)
    assert any(
        holds_secret(e.inputs) or holds_secret(e.outputs) or holds_secret(e.data)
        for e in AuditEntry.objects.filter(run=run)
    )

    entry = services.run_redact(run_id=run.pk, actor=users["boss"], reason="erasure request 17")

    run.refresh_from_db()
    assert run.redacted_at is not None
    assert run.inputs == {}
    assert run.output is None
    assert not any(holds_secret(s) for s in StepRun.objects.filter(run=run).values())
    assert not any(holds_secret(c) for c in Checkpoint.objects.filter(run=run).values())
    assert not holds_secret(list(HumanTask.objects.filter(run=run).values()))
    assert not holds_secret(list(Decision.objects.filter(task__run=run).values()))
    assert Decision.objects.filter(task__run=run, user=users["r1"], action="approve").exists()
    assert not holds_secret(list(HandoffEnvelope.objects.filter(origin_run=run).values()))
    assert not holds_secret(list(OutboxEvent.objects.filter(payload__run=run.pk).values()))
    delivery = WebhookDelivery.objects.get(payload__run=run.pk)
    assert delivery.payload == {"organization": "default", "run": run.pk, "redacted": True}
    entries = list(AuditEntry.objects.filter(run=run).order_by("seq"))
    assert not any(holds_secret([e.inputs, e.outputs, e.data, e.error_message]) for e in entries)
    # Order and links are kept: the same entries, with the same hashes, then the record.
    assert [(e.seq, e.hash) for e in entries[: len(before)]] == before
    assert entry.event == "audit.redacted"
    assert entries[-1].pk == entry.pk
    assert entry.actor_name == "boss"
    assert entry.data["reason"] == "erasure request 17"
    assert entry.data["through_seq"] == len(before)
    assert (run.audit_seq, run.audit_head) == (entry.seq, entry.hash)
    assert all(verify_chain(*found) is None for found in chains(run.pk))
    assert "audit trail intact" in verify("--run", str(run.pk))


def test_an_erased_run_is_neither_forked_nor_resumed(reviewed: Run, users: Any) -> None:
    services.run_redact(run_id=reviewed.pk, actor=users["boss"], reason="erasure request")
    Run.objects.filter(pk=reviewed.pk).update(status=R.FAILED)

    with pytest.raises(Conflict, match="nothing to fork from"):
        services.run_fork(run_id=reviewed.pk, checkpoint_seq=1, actor=users["boss"])
    with pytest.raises(Conflict, match="cannot be resumed"):
        services.run_resume(run_id=reviewed.pk, actor=users["boss"])
    assert not Run.objects.filter(forked_from=reviewed).exists()


def test_the_redact_command_records_its_actor_and_reason(reviewed: Run, users: Any) -> None:
    out = StringIO()
    call_command(
        "redact",
        "--run",
        str(reviewed.pk),
        "--reason",
        "GDPR art. 17",
        "--actor",
        "boss",
        stdout=out,
    )

    last = AuditEntry.objects.filter(run=reviewed).order_by("-seq").first()
    assert f"run {reviewed.pk}: data erased" in out.getvalue()
    assert (last.event, last.actor_name, last.data["reason"]) == (
        "audit.redacted",
        "boss",
        "GDPR art. 17",
    )
    with pytest.raises(CommandError, match="reason"):
        call_command("redact", "--run", str(reviewed.pk), "--reason", "  ")
    with pytest.raises(CommandError, match="No user 'nobody'"):
        call_command("redact", "--run", str(reviewed.pk), "--reason", "x", "--actor", "nobody")
    with pytest.raises(CommandError, match="No run 999999"):
        call_command("redact", "--run", "999999", "--reason", "x")


def test_erasing_a_run_that_is_not_finished_is_refused_and_recorded(
    make_pipeline: Any, users: dict[str, Any]
) -> None:
    name = make_pipeline([VALUE, REVIEW])
    run = drive(services.run_start(pipeline=name, inputs={"value": SECRET}, actor=users["starter"]))
    assert run.status == R.WAITING

    with pytest.raises(CommandError, match=f"Run {run.pk} is waiting: only a finished run"):
        call_command("redact", "--run", str(run.pk), "--reason", "too early", "--actor", "boss")

    run.refresh_from_db()
    last = AuditEntry.objects.filter(run=run).order_by("-seq").first()
    assert (last.event, last.actor_name, last.data) == (
        "run.refused",
        "boss",
        {"action": "redact", "reason": "too early"},
    )
    assert run.redacted_at is None
    assert run.inputs == {"value": SECRET}
    assert holds_secret(HumanTask.objects.get(run=run).context)
    assert all(verify_chain(*found) is None for found in chains(run.pk))


def test_only_the_organization_admins_may_erase_a_run(reviewed: Run, users: Any) -> None:
    stranger_org = Organization.objects.create(slug="elsewhere", name="Elsewhere")
    admin_elsewhere = type(users["boss"]).objects.create_user("admin-elsewhere")
    Membership.objects.create(
        user=admin_elsewhere, organization=stranger_org, role=Membership.Role.ADMIN
    )

    with pytest.raises(PermissionDenied, match="Only the admins"):
        services.run_redact(run_id=reviewed.pk, actor=users["starter"], reason="mine")
    with pytest.raises(NotFound):
        services.run_redact(run_id=reviewed.pk, actor=admin_elsewhere, reason="theirs")
    with pytest.raises(InvalidInput, match="reason"):
        services.run_redact(run_id=reviewed.pk, actor=users["boss"], reason="")

    refused = AuditEntry.objects.filter(run=reviewed, event="run.refused").order_by("seq")
    assert [e.data["action"] for e in refused] == ["redact", "redact"]
    reviewed.refresh_from_db()
    assert reviewed.redacted_at is None
    assert reviewed.inputs == {"value": SECRET}


def test_the_admin_action_asks_for_the_reason_then_erases(
    client: Any, reviewed: Run, users: dict[str, Any]
) -> None:
    changelist = reverse("admin:pipelines_run_changelist")
    users["boss"].user_permissions.add(Permission.objects.get(codename="view_run"))
    client.force_login(users["boss"])  # staff, admin of the run's organization
    selected = {"action": "redact", "_selected_action": [reviewed.pk]}

    asked = client.post(changelist, selected)
    assert asked.status_code == 200
    assert b'name="reason"' in asked.content
    reviewed.refresh_from_db()
    assert reviewed.redacted_at is None

    done = client.post(changelist, {**selected, "reason": "asked by the customer"})
    assert done.status_code == 302
    reviewed.refresh_from_db()
    last = AuditEntry.objects.filter(run=reviewed).order_by("-seq").first()
    assert reviewed.redacted_at is not None
    assert (last.event, last.actor_name, last.data["reason"]) == (
        "audit.redacted",
        "boss",
        "asked by the customer",
    )


def test_the_admin_action_reaches_only_runs_of_administered_organizations(
    client: Any, reviewed: Run, users: dict[str, Any], django_user_model: Any
) -> None:
    other = Organization.objects.create(slug="other", name="Other")
    staff = django_user_model.objects.create_user("other-admin", is_staff=True)
    Membership.objects.create(user=staff, organization=other, role=Membership.Role.ADMIN)
    staff.user_permissions.add(Permission.objects.get(codename="view_run"))
    client.force_login(staff)

    client.post(
        reverse("admin:pipelines_run_changelist"),
        {"action": "redact", "_selected_action": [reviewed.pk], "reason": "not mine"},
    )

    reviewed.refresh_from_db()
    assert reviewed.redacted_at is None
    assert reviewed.inputs == {"value": SECRET}


# --- the beat job ---------------------------------------------------------------------


def test_beat_applies_retention(settings: Any) -> None:
    from firefly_site.celery import app

    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "pipelines.tasks.apply_retention" in scheduled
    assert app.tasks["pipelines.tasks.apply_retention"].__module__ == "pipelines.tasks"


@pytest.fixture
def aged(make_pipeline: Any, settings: Any) -> dict[str, Any]:
    """Runs of a pipeline keeping data 10 days and runs 30, of all ages; and old runs of a
    pipeline that keeps everything (no settings' default)."""
    settings.FIREFLY_RETENTION_BATCH = 2
    settings.FIREFLY_RETENTION_PAUSE_S = 0
    settings.FIREFLY_RETENTION_IDLE_SHARE = 0
    settings.FIREFLY_RETENTION_OUTPUTS_DAYS = None
    settings.FIREFLY_RETENTION_RUNS_DAYS = None
    kept = make_pipeline([VALUE], retention={"outputs_days": 10, "runs_days": 30})
    forever = make_pipeline([VALUE])
    unfinished = services.run_start(pipeline=kept, inputs={"value": SECRET})
    Run.objects.filter(pk=unfinished.pk).update(created_at=timezone.now() - timedelta(days=90))
    return {
        "old": [old_run(kept, 40) for _ in range(3)],
        "middle": old_run(kept, 20),
        "young": old_run(kept, 1),
        "unfinished": unfinished,
        "forever": old_run(forever, 400),
        "pipeline": kept,
    }


def test_the_beat_job_erases_then_purges_by_age_in_batches(aged: dict[str, Any]) -> None:
    old_ids = [run.pk for run in aged["old"]]
    heads = {run.pk: (run.audit_seq, run.audit_head) for run in aged["old"]}

    from pipelines.tasks import apply_retention

    apply_retention()  # as beat calls it

    assert not Run.objects.filter(pk__in=old_ids).exists()
    assert not StepRun.objects.filter(run_id__in=old_ids).exists()
    assert not Checkpoint.objects.filter(run_id__in=old_ids).exists()
    # Their entries stay, redacted, each chain ending in the redaction's record.
    for run_id in old_ids:
        entries = list(AuditEntry.objects.filter(run_id=run_id).order_by("seq"))
        assert entries[-1].event == "audit.redacted"
        assert entries[-1].data["through_seq"] == heads[run_id][0]
        assert not any(holds_secret([e.inputs, e.outputs, e.data]) for e in entries)
    middle = Run.objects.get(pk=aged["middle"].pk)
    assert middle.redacted_at is not None
    assert middle.inputs == {}
    assert StepRun.objects.get(run=middle).outputs is None
    for run in (aged["young"], aged["unfinished"], aged["forever"]):
        run.refresh_from_db()
        assert run.redacted_at is None
        assert run.inputs == {"value": SECRET}
    # Three runs in batches of two: two purge entries in the pipeline's chain.
    pipeline = Pipeline.objects.get(name=aged["pipeline"])
    purges = AuditEntry.objects.filter(
        pipeline=pipeline, run__isnull=True, event="retention.purged"
    ).order_by("seq")
    assert [len(p.data["runs"]) for p in purges] == [2, 1]
    named = {int(pk): tuple(head) for p in purges for pk, head in p.data["runs"].items()}
    assert set(named) == set(old_ids)
    assert all(named[pk][0] == heads[pk][0] + 1 for pk in old_ids)  # + audit.redacted
    assert "audit trail intact" in verify()
    assert "audit trail intact" in verify("--run", str(old_ids[0]))

    out = StringIO()
    call_command("apply_retention", stdout=out)
    again = json.loads(out.getvalue())
    assert (again["redacted"], again["purged"], again["batches"]) == (0, 0, 0)


class _own_connection:
    """A second PostgreSQL session (psycopg), outside Django's connection handling."""

    def __enter__(self) -> Any:
        import psycopg

        params = connection.get_connection_params()
        self.conn = psycopg.connect(autocommit=True, **params)
        return self.conn.cursor()

    def __exit__(self, *exc: Any) -> None:
        self.conn.close()


# Another session must see the test's runs: they are committed.
@pytest.mark.django_db(transaction=True)
def test_the_purge_skips_a_run_another_transaction_holds(aged: dict[str, Any]) -> None:
    held = aged["old"][0]
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _own_connection() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT 1 FROM pipelines_run WHERE id = %s FOR UPDATE", [held.pk])
            locked.set()
            release.wait(10)
            cursor.execute("ROLLBACK")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        report = services.retention_apply()
    finally:
        release.set()
        holder.join()

    assert report.purged == 2
    assert Run.objects.filter(pk=held.pk).exists()
    assert services.retention_apply().purged == 1
    assert not Run.objects.filter(pk=held.pk).exists()


def test_a_run_deleted_without_a_purge_record_is_reported(aged: dict[str, Any]) -> None:
    services.retention_apply()
    victim = aged["forever"]
    with connection.cursor() as cursor:
        for table in ("pipelines_checkpoint", "pipelines_steprun"):
            cursor.execute(f"DELETE FROM {table} WHERE run_id = %s", [victim.pk])
        cursor.execute("DELETE FROM pipelines_run WHERE id = %s", [victim.pk])

    message = verify_fails()

    assert f"run {victim.pk}: deleted" in message
    assert "no retention purge recorded it" in message


def test_a_truncated_purged_chain_is_reported(aged: dict[str, Any]) -> None:
    services.retention_apply()
    purged = aged["old"][1].pk
    with connection.cursor() as cursor:
        # As the database's owner could: the append-only trigger is skipped.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "DELETE FROM pipelines_auditentry WHERE run_id = %s AND seq = "
            "(SELECT max(seq) FROM pipelines_auditentry WHERE run_id = %s)",
            [purged, purged],
        )
        cursor.execute("SET LOCAL session_replication_role = origin")

    assert f"run {purged}" in verify_fails("--run", str(purged))
    assert f"run {purged}" in verify_fails()


def test_the_admin_and_export_still_show_a_purged_run_entries(
    aged: dict[str, Any], admin_client: Any, tmp_path: Path
) -> None:
    services.retention_apply()
    purged = aged["old"][0].pk
    entry = AuditEntry.objects.filter(run_id=purged).order_by("seq").first()

    listing = admin_client.get(reverse("admin:pipelines_auditentry_changelist"), {"q": purged})
    page = admin_client.get(reverse("admin:pipelines_auditentry_change", args=[entry.pk]))
    exported = tmp_path / "run.jsonl"
    call_command("export_audit", "--run", str(purged), "--output", str(exported), stderr=StringIO())

    assert listing.status_code == 200
    assert page.status_code == 200
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert lines[-1]["event"] == "audit.redacted"


# --- archive segments -----------------------------------------------------------------


def test_purged_runs_are_archived_first_and_verify_against_their_segments(
    aged: dict[str, Any], settings: Any, tmp_path: Path
) -> None:
    settings.FIREFLY_RETENTION_ARCHIVE_DIR = str(tmp_path)
    settings.FIREFLY_RETENTION_ARCHIVE_REQUIRED = True

    report = services.retention_apply()

    segments = sorted(tmp_path.glob("*.jsonl"))
    assert report.purged == 3
    assert len(segments) == 2
    assert [Path(s).name for s in report.segments] == [s.name for s in segments]
    archived = [json.loads(line) for s in segments for line in s.read_text().splitlines()]
    old_ids = {run.pk for run in aged["old"]}
    assert {line["run_id"] for line in archived} == old_ids
    assert len(archived) == AuditEntry.objects.filter(run_id__in=old_ids).count()
    purges = AuditEntry.objects.filter(event="retention.purged").order_by("seq")
    assert [p.data["archive"] for p in purges] == [s.name for s in segments]
    assert "audit trail intact" in verify("--against", str(segments[0]))
    assert "audit trail intact" in verify("--against", str(tmp_path))

    # A segment's copy whose content was changed no longer matches its digest.
    lines = segments[0].read_text().splitlines()
    record = next(i for i, line in enumerate(lines) if '"audit.redacted"' in line)
    changed = json.loads(lines[record])
    changed["data"]["reason"] = "nobody asked"
    segments[0].write_text("\n".join([*lines[:record], json.dumps(changed), *lines[record + 1 :]]))
    assert "no longer matches its digest" in verify_fails("--against", str(segments[0]))
    # A segment line that no longer matches the database is named.
    forged = json.loads(lines[0])
    forged["hash"] = "0" * 64
    segments[0].write_text("\n".join([json.dumps(forged), *lines[1:]]) + "\n")
    assert "edited" in verify_fails("--against", str(segments[0]))


def test_with_archiving_required_and_no_folder_nothing_is_purged(
    aged: dict[str, Any], settings: Any
) -> None:
    settings.FIREFLY_RETENTION_ARCHIVE_DIR = ""
    settings.FIREFLY_RETENTION_ARCHIVE_REQUIRED = True

    report = services.retention_apply()

    assert report.purged == 0
    assert Run.objects.filter(pk__in=[run.pk for run in aged["old"]]).count() == 3
    assert Run.objects.get(pk=aged["middle"].pk).redacted_at is not None  # erasure goes on
