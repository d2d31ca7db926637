"""Evidence per organization: each one's audit chains, export and verification stand on
their own, and a webhook hears only its own organization's events."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from approvals import services as approvals
from orgs.models import Membership, Organization
from pipelines import audit, services
from pipelines.models import AuditEntry, Run
from tests.approvals.conftest import drive, open_task
from tests.pipelines.test_audit import tamper
from tests.webhooks.conftest import hook_settings, offline, receive
from webhooks import services as webhooks
from webhooks.models import WEBHOOK_EVENTS, WebhookDelivery
from webhooks.tasks import deliver_webhook

__all__ = ["hook_settings", "offline", "receive"]

pytestmark = pytest.mark.django_db

TABLE = AuditEntry._meta.db_table
SPEC = {
    "name": "gated",  # the same name in both organizations
    "steps": [
        {"name": "build", "type": "noop"},
        {
            "name": "review",
            "type": "approval",
            "after": ["build"],
            "config": {"assignee_role": "reviewers"},
        },
    ],
}


@pytest.fixture
def tenants(django_user_model: Any) -> dict[str, Any]:
    """Organizations alpha and bravo, each with "gated", a starter and a reviewer."""
    from django.contrib.auth.models import Group

    reviewers = Group.objects.create(name="reviewers")
    made: dict[str, Any] = {}
    for slug in ("alpha", "bravo"):
        org = Organization.objects.create(slug=slug, name=slug.title())
        starter = django_user_model.objects.create_user(f"{slug}-starter", password="x")
        reviewer = django_user_model.objects.create_user(f"{slug}-reviewer", password="x")
        reviewer.groups.add(reviewers)
        for user in (starter, reviewer):
            Membership.objects.create(user=user, organization=org)
        services.pipeline_create(spec=SPEC, organization=org, member_role="starter")
        made[slug] = {"org": org, "starter": starter, "reviewer": reviewer}
    return made


def finished_run(tenant: dict[str, Any]) -> Run:
    """A run of the tenant's "gated", approved by its reviewer and finished."""
    run = drive(
        services.run_start(
            pipeline="gated", inputs={}, actor=tenant["starter"], organization=tenant["org"]
        )
    )
    approvals.task_approve(task_id=open_task(run).pk, user=tenant["reviewer"])
    return drive(run)


def verify(*args: str) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def entries_of(org: Organization) -> int:
    return AuditEntry.objects.filter(organization=org).count()


def test_each_organization_verifies_on_its_own(tenants):
    a_run, b_run = finished_run(tenants["alpha"]), finished_run(tenants["bravo"])
    assert a_run.status == b_run.status == Run.Status.SUCCEEDED
    alpha, bravo = tenants["alpha"]["org"], tenants["bravo"]["org"]
    # Every entry of a run is in the run's organization, and so are its pipeline's.
    assert set(AuditEntry.objects.filter(run=a_run).values_list("organization", flat=True)) == {
        alpha.pk
    }
    assert not AuditEntry.objects.filter(organization=alpha, run=b_run).exists()

    assert f"checked {entries_of(alpha)} entries" in verify("--organization", "alpha")
    assert f"checked {entries_of(bravo)} entries" in verify("--organization", "bravo")

    # Bravo's chain is rewritten: bravo's check fails and names the run, alpha's holds.
    forged = "outputs = '{\"forged\": true}'"
    tamper(f"UPDATE {TABLE} SET {forged} WHERE run_id = {b_run.pk} AND seq = 2")
    assert "audit trail intact" in verify("--organization", "alpha")
    with pytest.raises(CommandError, match=f"run {b_run.pk}"):
        verify("--organization", "bravo")
    with pytest.raises(CommandError, match="No organization 'nowhere'"):
        verify("--organization", "nowhere")


def test_an_export_holds_one_organization_and_verifies_against_it(tenants, tmp_path: Path):
    a_run, b_run = finished_run(tenants["alpha"]), finished_run(tenants["bravo"])
    alpha = tenants["alpha"]["org"]
    today = timezone.now().date().isoformat()
    exported = tmp_path / "alpha.jsonl"
    call_command(
        "export_audit",
        "--since",
        today,
        "--organization",
        "alpha",
        "--output",
        str(exported),
        stderr=io.StringIO(),
    )
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == entries_of(alpha)
    assert {line["run_id"] for line in lines} - {None} == {a_run.pk}
    alpha_ids = set(AuditEntry.objects.filter(organization=alpha).values_list("pk", flat=True))
    assert {line["id"] for line in lines} == alpha_ids
    assert "audit trail intact" in verify("--organization", "alpha", "--against", str(exported))

    # One organization's export is no window into the other's: a run of bravo asked for
    # with alpha's slug exports nothing.
    other = tmp_path / "other.jsonl"
    call_command(
        "export_audit",
        "--run",
        str(b_run.pk),
        "--organization",
        "alpha",
        "--output",
        str(other),
        stderr=io.StringIO(),
    )
    assert other.read_text() == ""
    with pytest.raises(CommandError, match="No organization 'nowhere'"):
        call_command("export_audit", "--since", today, "--organization", "nowhere")


def test_chains_in_two_organizations_never_link_to_each_other(tenants):
    """Same pipeline name, separate pipelines: each has its own chain of pipeline
    entries, and each run chain starts from nothing."""
    finished_run(tenants["alpha"])
    finished_run(tenants["bravo"])
    for chain, entries, head in audit.chains(None, None):
        assert len({e.organization_id for e in entries}) == 1, chain
        assert audit.verify_chain(chain, entries, head) is None


def test_a_webhook_hears_only_its_own_organizations_events(
    hook_settings, receive, tenants, offline
):
    heard = {}
    hooks = {}
    for slug in ("alpha", "bravo"):
        heard[slug] = receive([200])
        hooks[slug] = webhooks.webhook_create(
            url=heard[slug].url, events=list(WEBHOOK_EVENTS), organization=tenants[slug]["org"]
        )
    with offline():
        runs = {slug: finished_run(tenants[slug]) for slug in ("alpha", "bravo")}
    assert offline.queued, "the runs sent events"
    for delivery_id in offline.queued:
        deliver_webhook.apply(args=(delivery_id,))

    for slug, other in (("alpha", "bravo"), ("bravo", "alpha")):
        bodies = [json.loads(r["body"]) for r in heard[slug].received]
        types = sorted(b["type"] for b in bodies)
        assert types == ["run.finished", "task.decided", "task.opened"], slug
        assert {b["data"]["organization"] for b in bodies} == {slug}
        assert {b["data"]["run"] for b in bodies} == {runs[slug].pk}
        assert str(runs[other].pk) not in {str(b["data"]["run"]) for b in bodies}
        # Every delivery row of the hook is its own organization's.
        deliveries = WebhookDelivery.objects.filter(webhook=hooks[slug])
        assert {d.organization_id for d in deliveries} == {tenants[slug]["org"].pk}
        assert {d.payload["run"] for d in deliveries} == {runs[slug].pk}
