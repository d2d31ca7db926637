"""A run's unsettled work in the run API and on the run page, at a constant query cost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from approvals.models import HumanTask
from pipelines import services
from pipelines.models import Run
from tests.approvals.conftest import drive


def _waiting_on(gates: int, users: dict[str, Any], name: str) -> Run:
    """A run waiting on `gates` parallel approvals (as many open tasks and waiting steps)."""
    steps: list[dict[str, Any]] = [{"name": "build", "type": "noop"}]
    steps += [
        {
            "name": f"review-{i}",
            "type": "approval",
            "after": ["build"],
            "config": {"assignee_role": "reviewers"},
        }
        for i in range(gates)
    ]
    services.pipeline_create(member_role="starter", spec={"name": name, "steps": steps})
    run = drive(services.run_start(pipeline=name, inputs={}, actor=users["starter"]))
    assert run.status == Run.Status.WAITING
    return run


def test_run_api_shows_open_tasks_and_waiting_steps(
    users: dict[str, Any], client_for: Callable[[Any], APIClient]
) -> None:
    run = _waiting_on(2, users, "two-gates")
    body = client_for(users["starter"]).get(f"/api/v1/runs/{run.pk}/").json()
    unsettled = body["unsettled"]
    assert unsettled["counts"]["open_tasks"] == 2
    assert unsettled["counts"]["steps_in_flight"] == 2
    assert unsettled["counts"]["unacknowledged_handoffs"] == 0
    assert unsettled["summary"] == "2 open tasks, 2 steps in flight"
    tasks = HumanTask.objects.filter(run=run).values_list("pk", flat=True)
    assert sorted(item["id"] for item in unsettled["items"]["open_tasks"]) == sorted(tasks)
    assert {item["step"] for item in unsettled["items"]["steps_in_flight"]} == {
        "review-0",
        "review-1",
    }


def test_a_finished_run_has_nothing_unsettled(
    users: dict[str, Any], client_for: Callable[[Any], APIClient]
) -> None:
    services.pipeline_create(
        member_role="starter", spec={"name": "quick", "steps": [{"name": "a", "type": "noop"}]}
    )
    run = drive(services.run_start(pipeline="quick", inputs={}, actor=users["starter"]))
    assert run.status == Run.Status.SUCCEEDED
    body = client_for(users["starter"]).get(f"/api/v1/runs/{run.pk}/").json()
    assert body["unsettled"]["summary"] == "no unsettled work"
    assert not any(body["unsettled"]["counts"].values())


def test_unsettled_work_costs_the_same_queries_for_one_task_or_many(
    users: dict[str, Any], client_for: Callable[[Any], APIClient], client: Any
) -> None:
    few = _waiting_on(1, users, "one-gate")
    many = _waiting_on(8, users, "eight-gates")
    api = client_for(users["starter"])
    client.force_login(users["starter"])

    def get(path: str, run: Run) -> Any:
        if path.startswith("/api/"):
            return api.get(path.format(run.pk))
        return client.get(path.format(run.pk), HTTP_HX_REQUEST="true" if "part" in path else "")

    def count(path: str, run: Run) -> int:
        get(path, run)  # warm the per-process caches (versions, grants)
        with CaptureQueriesContext(connection) as queries:
            assert get(path, run).status_code == 200
        return len(queries)

    for path in ("/api/v1/runs/{}/", "/runs/{}/", "/runs/{}/?part=live"):
        assert count(path, many) == count(path, few), path


def test_run_page_lists_the_unsettled_work(users: dict[str, Any], client: Any) -> None:
    run = _waiting_on(2, users, "two-gates")
    client.force_login(users["starter"])
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "Unsettled work" in page
    assert "2 open tasks" in page
    assert "2 steps in flight" in page
    task = HumanTask.objects.filter(run=run).order_by("pk").first()
    assert task is not None
    assert f'href="/tasks/{task.pk}/"' in page
    live = client.get(f"/runs/{run.pk}/?part=live", HTTP_HX_REQUEST="true").content.decode()
    assert "2 open tasks" in live
