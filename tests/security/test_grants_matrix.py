"""Who may do what inside one organization: every role against every action, through the
API and the rules themselves, exactly as the table in docs/security.md says."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import transaction
from django.test import Client

from approvals import guards
from approvals.models import HumanTask
from orgs.models import Membership, Organization
from pipelines import permissions, services
from pipelines.errors import NotFound, PermissionDenied
from pipelines.models import HandoffEnvelope, Pipeline, PipelineGrant, Run
from tests.approvals.conftest import drive, open_task

# The table. Codes are what the API answers: 404 where the object is not visible to
# the role, 403 where it is visible but the action not allowed; 409 means the request
# passed every permission and met the run's state (only a failed run resumes). "yes" /
# "no": whether the pipeline is in the role's list, or the run's entries in its audit list.
ACTIONS = (
    "list pipeline",
    "see run",
    "see task context",
    "start run",
    "cancel",
    "resume",
    "fork",
    "acknowledge handoff",
    "decide task",
    "create pipeline",
    "add version",
    "manage webhooks",
    "audit entries",
)
MATRIX: dict[str, tuple[str, ...]] = {
    "member without grant": (
        *("no", "404", "404", "404", "404", "404", "404", "404", "404"),
        *("403", "403", "403", "no"),
    ),
    "viewer": (
        *("yes", "200", "200", "403", "403", "403", "403", "403", "403"),
        *("403", "403", "403", "yes"),
    ),
    "starter": (
        *("yes", "200", "200", "201", "403", "403", "403", "403", "403"),
        *("403", "403", "403", "yes"),
    ),
    "operator": (
        *("yes", "200", "200", "201", "200", "409", "201", "200", "403"),
        *("403", "403", "403", "yes"),
    ),
    "operator by group": (
        *("yes", "200", "200", "201", "200", "409", "201", "200", "403"),
        *("403", "403", "403", "yes"),
    ),
    "member, pipeline open to members as starter": (
        *("yes", "200", "200", "201", "403", "403", "403", "403", "403"),
        *("403", "403", "403", "yes"),
    ),
    "pipeline author": (
        *("yes", "200", "200", "201", "200", "409", "201", "200", "403"),
        *("201", "201", "403", "yes"),
    ),
    "organization author": (
        *("no", "404", "404", "404", "404", "404", "404", "404", "404"),
        *("201", "403", "403", "no"),
    ),
    "organization admin": (
        *("yes", "200", "200", "201", "200", "409", "201", "200", "403"),
        *("201", "201", "200", "yes"),
    ),
    "run starter (grant since removed)": (
        *("no", "200", "200", "404", "200", "409", "201", "200", "403"),
        *("403", "403", "403", "yes"),
    ),
    "task assignee (role member)": (
        *("no", "404", "200", "404", "404", "404", "404", "404", "200"),
        *("403", "403", "403", "no"),
    ),
    "superuser": (
        *("yes", "200", "200", "201", "200", "409", "201", "200", "200"),
        *("201", "201", "200", "yes"),
    ),
    "user of another organization": (
        *("404", "404", "404", "404", "404", "404", "404", "404", "404"),
        *("404", "404", "404", "404"),
    ),
}
ROLES = tuple(MATRIX)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def spec(name: str, description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "description": description or f"{name}: build, review, ship",
        "input_schema": {"type": "object", "properties": {"version": {"type": "string"}}},
        "steps": [
            {"name": "build", "type": "noop"},
            {
                "name": "review",
                "type": "approval",
                "after": ["build"],
                "config": {"assignee_role": "reviewers"},
            },
            {"name": "ship", "type": "noop", "after": ["review"]},
        ],
    }


def seed() -> dict[str, Any]:
    """Organization "acme": a private pipeline "gated" by its author, with one grant per
    role; a pipeline "shared" open to every member as starter; in each, a run waiting
    at its review with a handoff. A user of "elsewhere" belongs to acme in nothing."""
    acme = Organization.objects.create(slug="acme", name="Acme")
    elsewhere = Organization.objects.create(slug="elsewhere", name="Elsewhere")
    reviewers = Group.objects.create(name="reviewers")
    ops = Group.objects.create(name="ops")
    User = get_user_model()
    made: dict[str, Any] = {}
    roles = {
        "organization admin": Membership.Role.ADMIN,
        "pipeline author": Membership.Role.AUTHOR,
        "organization author": Membership.Role.AUTHOR,
    }
    for number, role in enumerate(ROLES):
        if role == "superuser":
            made[role] = User.objects.create_superuser(f"user{number}", password="x")
            continue
        made[role] = User.objects.create_user(f"user{number}", password="x")
        org = elsewhere if role == "user of another organization" else acme
        Membership.objects.create(
            user=made[role], organization=org, role=roles.get(role, Membership.Role.MEMBER)
        )
    made["task assignee (role member)"].groups.add(reviewers)
    made["operator by group"].groups.add(ops)

    services.pipeline_create(spec=spec("gated"), actor=made["pipeline author"], organization=acme)
    services.pipeline_create(spec=spec("shared"), organization=acme, member_role="starter")
    services.pipeline_create(
        spec={"name": "intake", "steps": [{"name": "take", "type": "noop"}]}, organization=acme
    )
    gated = Pipeline.objects.get(organization=acme, name="gated")
    for role, grant in (("viewer", "viewer"), ("starter", "starter"), ("operator", "operator")):
        PipelineGrant.objects.create(pipeline=gated, user=made[role], role=grant)
    PipelineGrant.objects.create(pipeline=gated, group=ops, role="operator")
    # The run starter started while a starter; the grant is gone since.
    was = PipelineGrant.objects.create(
        pipeline=gated, user=made["run starter (grant since removed)"], role="starter"
    )
    subjects = {}
    for name, starter in (
        ("gated", made["run starter (grant since removed)"]),
        ("shared", made["organization admin"]),
    ):
        run = drive(
            services.run_start(
                pipeline=name, inputs={"version": "1"}, actor=starter, organization=acme
            )
        )
        child = services.run_start(pipeline="intake", inputs={}, parent=run)
        envelope = HandoffEnvelope.objects.create(
            organization=acme,
            origin_run=run,
            origin_step="review",
            key="handoff-1",
            target_pipeline="intake",
            child_run=child,
        )
        subjects[name] = {"run": run, "task": open_task(run), "envelope": envelope}
    was.delete()
    return {"users": made, "subjects": subjects}


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[dict[str, Any]]:
    """Built once; each test's changes roll back to it (a savepoint per test)."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield seed()
        transaction.set_rollback(True)


def subject_of(role: str, world: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = "shared" if role.startswith("member, pipeline open") else "gated"
    return name, world["subjects"][name]


def fresh(user: Any) -> Any:
    """The user as a request would load it: nothing cached of roles or grants."""
    return get_user_model().objects.get(pk=user.pk)


def outcome(role: str, action: str, world: dict[str, Any]) -> str:
    """What the API answers `role` doing `action` on its pipeline, run, task, handoff."""
    name, subject = subject_of(role, world)
    run, task, envelope = subject["run"], subject["task"], subject["envelope"]
    client = Client(headers={"X-Firefly-Organization": "acme"})
    client.force_login(world["users"][role])

    def post(url: str, body: dict[str, Any] | None = None) -> str:
        response = client.post(url, body or {}, content_type="application/json")
        return str(response.status_code)

    if action == "list pipeline":
        response = client.get("/api/v1/pipelines/")
        if response.status_code != 200:
            return str(response.status_code)
        return "yes" if name in [p["name"] for p in response.json()["results"]] else "no"
    if action == "audit entries":
        response = client.get(f"/api/v1/audit/?run={run.pk}")
        if response.status_code != 200:
            return str(response.status_code)
        return "yes" if response.json()["results"] else "no"
    if action == "see run":
        return str(client.get(f"/api/v1/runs/{run.pk}/").status_code)
    if action == "see task context":
        response = client.get(f"/api/v1/tasks/{task.pk}/")
        if response.status_code == 200:
            assert "context" in response.json()
        return str(response.status_code)
    if action == "start run":
        return post(f"/api/v1/pipelines/{name}/runs/", {"inputs": {"version": "2"}})
    if action == "cancel":
        return post(f"/api/v1/runs/{run.pk}/cancel/")
    if action == "resume":
        return post(f"/api/v1/runs/{run.pk}/resume/")
    if action == "fork":
        return post(f"/api/v1/runs/{run.pk}/fork/", {"checkpoint": 1})
    if action == "acknowledge handoff":
        return post(f"/api/v1/handoffs/{envelope.pk}/acknowledge/", {"decision": "done"})
    if action == "decide task":
        return post(f"/api/v1/tasks/{task.pk}/reject/", {"comment": "no"})
    if action == "create pipeline":
        return post("/api/v1/pipelines/", {"spec": spec("brand-new")})
    if action == "add version":
        return post("/api/v1/pipelines/", {"spec": spec(name, "a second version")})
    if action == "manage webhooks":
        return str(client.get("/api/v1/webhooks/").status_code)
    raise AssertionError(action)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_do_exactly_what_the_table_says(db, world, role):
    expected = dict(zip(ACTIONS, MATRIX[role], strict=True))
    got = {}
    for action in ACTIONS:
        cache.clear()  # rate limits: each action judged on its own
        # Each action starts from the seed: a cancel must not turn the resume into a 409.
        with transaction.atomic():
            got[action] = outcome(role, action, world)
            transaction.set_rollback(True)
    assert got == expected


@pytest.mark.parametrize("role", ROLES)
def test_the_rules_and_services_say_the_same_as_the_api(db, world, role):
    """The predicates the services enforce agree with the table, and the service refuses
    without any view in front of it: 404 as NotFound, 403 as PermissionDenied."""
    row = dict(zip(ACTIONS, MATRIX[role], strict=True))
    user = fresh(world["users"][role])
    _, subject = subject_of(role, world)
    run = Run.objects.get(pk=subject["run"].pk)
    task = HumanTask.objects.get(pk=subject["task"].pk)
    pipeline = permissions.pipeline_of(run)
    assert permissions.allowed(user, "view_pipeline", pipeline) == (row["list pipeline"] == "yes")
    assert permissions.allowed(user, "view_run", run) == (row["see run"] == "200")
    assert permissions.allowed(user, "start_run", pipeline) == (row["start run"] == "201")
    assert permissions.allowed(user, "operate_run", run) == (row["cancel"] == "200")
    assert guards.can_view(user, task) == (row["see task context"] == "200")
    assert guards.can_act(user, task) == (row["decide task"] == "200")
    with transaction.atomic():
        if row["cancel"] == "200":
            assert services.run_cancel(run_id=run.pk, actor=user).status == Run.Status.CANCELLED
        else:
            error = NotFound if row["cancel"] == "404" else PermissionDenied
            with pytest.raises(error):
                services.run_cancel(run_id=run.pk, actor=user)
        transaction.set_rollback(True)


def table_markdown() -> str:
    head = "| role | " + " | ".join(ACTIONS) + " |"
    rule = "|---" * (len(ACTIONS) + 1) + "|"
    rows = [f"| {role} | " + " | ".join(MATRIX[role]) + " |" for role in ROLES]
    return "\n".join([head, rule, *rows])


def test_the_docs_show_this_table():
    """docs/security.md, under "Who may do what", holds the same table."""
    text = DOCS.read_text()
    section = re.search(r"^## Who may do what\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "docs/security.md has no section 'Who may do what'"
    assert table_markdown() in section.group(1)
