"""The README's REST API example, command by command, on the demo data a fresh `make run`
loads: engineer starts an expense in Acme, manager finds and approves its task."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from approvals.models import HumanTask
from pipelines.models import Run
from tests.approvals.conftest import drive

pytestmark = pytest.mark.django_db


def token_for(username: str) -> str:
    """`create_token USER --organization acme --name ci`: stdout is the key alone."""
    out, err = StringIO(), StringIO()
    call_command(
        "create_token", username, "--organization", "acme", "--name", "ci", stdout=out, stderr=err
    )
    key = out.getvalue().strip()
    assert key
    assert "\n" not in key
    assert key not in err.getvalue()
    return key


def test_the_readme_api_example_runs_as_written(settings):
    settings.FIREFLY_DEMO = True
    call_command("load_demo", stdout=StringIO())

    engineer = APIClient(HTTP_AUTHORIZATION=f"Token {token_for('engineer')}")
    started = engineer.post(
        "/api/v1/pipelines/expense/runs/",
        {"inputs": {"amount": 42, "reason": "train ticket"}},
        format="json",
        HTTP_IDEMPOTENCY_KEY="expense-0001",
    )
    assert started.status_code == 201, started.content
    run = Run.objects.get(pk=started.json()["id"])
    drive(run)  # what the workers of `make run` do

    manager = APIClient(HTTP_AUTHORIZATION=f"Token {token_for('manager')}")
    listed = manager.get("/api/v1/tasks/?mine=true&status=open")
    assert listed.status_code == 200, listed.content
    [task] = [t for t in listed.json()["results"] if t["run"] == run.pk]
    assert task["status"] == "open"

    approved = manager.post(
        f"/api/v1/tasks/{task['id']}/approve/", {"comment": "looks good"}, format="json"
    )
    assert approved.status_code == 200, approved.content
    assert HumanTask.objects.get(pk=task["id"]).status == HumanTask.Status.COMPLETED
    run = drive(run)
    assert run.status == Run.Status.SUCCEEDED
    assert run.steps.get(step_name="pay").outputs["paid"] == 42

    # Without status=open, mine=true lists the closed task too (the README says so).
    everything = manager.get("/api/v1/tasks/?mine=true").json()["results"]
    assert any(t["id"] == task["id"] and t["status"] != "open" for t in everything)
