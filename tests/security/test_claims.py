"""Attacks on claims: the starter claiming their own gate, a claim held forever."""

from __future__ import annotations

import time

from django.contrib.auth.models import Group

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines.models import AuditEntry
from tests.api.conftest import error_of

V1 = "/api/v1"


def test_the_starter_cannot_claim_their_own_gate(users, client_for, waiting_run):
    users["starter"].groups.add(Group.objects.get(name="reviewers"))
    run = waiting_run()
    task = HumanTask.objects.get(run=run, status="open")
    error = error_of(client_for(users["starter"]).post(f"{V1}/tasks/{task.pk}/claim/"), 403)
    assert error["message"] == "You started this run, so you may not approve it yourself."
    task.refresh_from_db()
    assert task.claimed_by is None  # the role can still take it
    refused = AuditEntry.objects.get(run=run, event="task.refused")
    assert (refused.actor_name, refused.data["action"]) == ("starter", "claim")


def test_a_claim_lapses_after_its_ttl(users, client_for, waiting_run, settings):
    settings.FIREFLY_CLAIM_TTL_S = 0.5
    run = waiting_run()
    task = HumanTask.objects.get(run=run, status="open")
    approvals.task_claim(task_id=task.pk, user=users["r1"])
    error = error_of(client_for(users["r2"]).post(f"{V1}/tasks/{task.pk}/approve/"), 403)
    assert error["message"] == f"Task {task.pk} is claimed by r1."

    time.sleep(0.6)
    response = client_for(users["r2"]).post(f"{V1}/tasks/{task.pk}/approve/")
    assert response.status_code == 200
    assert response.json()["status"] == "completed"


def test_admins_break_a_claim_and_others_may_not(users, client_for, waiting_run):
    run = waiting_run()
    task = HumanTask.objects.get(run=run, status="open")
    approvals.task_claim(task_id=task.pk, user=users["r1"])

    error = error_of(client_for(users["r2"]).post(f"{V1}/tasks/{task.pk}/break-claim/"), 403)
    assert error["message"] == (
        f"Only the organization's admins may break a claim on task {task.pk}."
    )
    task.refresh_from_db()
    assert task.claimed_by == users["r1"]
    refused = AuditEntry.objects.get(run=run, event="task.refused")
    assert (refused.actor_name, refused.data["action"]) == ("r2", "break_claim")

    response = client_for(users["boss"]).post(f"{V1}/tasks/{task.pk}/break-claim/")
    assert response.status_code == 200
    assert response.json()["claimed_by"] is None
    broken = AuditEntry.objects.get(run=run, event="task.claim_broken")
    assert (broken.actor_name, broken.data["claimed_by"]) == ("boss", "r1")
    # Back with the role: r2 may decide now.
    assert client_for(users["r2"]).post(f"{V1}/tasks/{task.pk}/approve/").status_code == 200
