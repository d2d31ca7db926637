"""Two organizations with the same pipeline names: every URL, as every kind of user of
one, with every id of the other, shows nothing of the other, confirms nothing of it
(404, never 403) and changes nothing of it."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.urls import reverse

from approvals import services as approvals
from approvals.models import Decision, HumanTask
from inbound import services as inbound
from inbound.models import InboundHook
from orgs.models import Membership, Organization
from pipelines import services
from pipelines.models import (
    AuditEntry,
    Checkpoint,
    HandoffEnvelope,
    Pipeline,
    PipelineGrant,
    Run,
    StepRun,
)
from schedules import services as schedules
from schedules.models import Schedule
from tests.approvals.conftest import drive, open_task
from tests.security.test_url_matrix import ALLOWED, url_names
from tokens.models import ApiToken
from tokens.services import token_create
from webhooks.models import Webhook

# B's rows carry this; no response to a user of A may contain it.
B_MARK = f"B-SECRET-{secrets.token_hex(6)}"
# A's rows carry this: a page of "gated" in A shows it.
A_MARK = f"A-OWN-{secrets.token_hex(6)}"

KINDS = ("member", "viewer", "starter", "operator", "reviewer", "admin")
TASK_ACTIONS = ("approve", "reject", "rollback", "complete", "claim", "unclaim", "break_claim")
# Names both organizations use, and one only B has.
SHARED_NAMES = ("gated", "intake")
B_ONLY_NAME = "bravo-only"


def gated(mark: str) -> dict[str, Any]:
    return {
        "name": "gated",
        "description": f"build, review, ship ({mark})",
        "input_schema": {
            "type": "object",
            "required": ["version"],
            "properties": {"version": {"type": "string"}, "secret": {"type": "string"}},
        },
        "steps": [
            {"name": "build", "type": "noop"},
            {
                "name": "review",
                "type": "approval",
                "after": ["build"],
                # One group for both: groups span organizations, tasks never do.
                "config": {"assignee_role": "reviewers", "instructions": f"Check {mark}"},
            },
            {"name": "ship", "type": "noop", "after": ["review"]},
        ],
    }


def intake(mark: str, name: str = "intake") -> dict[str, Any]:
    return {
        "name": name,
        "description": f"takes work ({mark})",
        "steps": [{"name": "take", "type": "noop"}],
    }


def person(username: str, org: Organization, role: str = "member", **extra: Any) -> Any:
    user = apps.get_model("auth", "User").objects.create_user(username, password="x", **extra)
    Membership.objects.create(user=user, organization=org, role=role)
    return user


def envelope_to_child(origin: Run, org: Organization, actor: Any, mark: str) -> HandoffEnvelope:
    child = services.run_start(pipeline="intake", inputs={}, actor=actor, parent=origin)
    Run.objects.filter(pk=child.pk).update(started_at=child.created_at)
    return HandoffEnvelope.objects.create(
        organization=org,
        origin_run=origin,
        origin_step="review",
        key="handoff-1",
        target_pipeline="intake",
        payload={"secret": mark},
        child_run=child,
    )


def seed() -> dict[str, Any]:
    reviewers = Group.objects.create(name="reviewers")
    a = Organization.objects.create(slug="alpha", name="Alpha")
    b = Organization.objects.create(slug="bravo", name="Bravo")

    # B: a waiting run with its open task and a handoff, a decided run, a webhook, a token.
    b_admin = person(f"{B_MARK}-admin", b, "admin")
    b_starter = person(f"{B_MARK}-starter", b)
    b_reviewer = person(f"{B_MARK}-reviewer", b)
    b_reviewer.groups.add(reviewers)
    for spec in (gated(B_MARK), intake(B_MARK), intake(B_MARK, B_ONLY_NAME)):
        services.pipeline_create(spec=spec, organization=b, member_role="starter")
    b_waiting = drive(
        services.run_start(
            pipeline="gated",
            inputs={"version": "1", "secret": B_MARK},
            actor=b_starter,
            organization=b,
        )
    )
    b_envelope = envelope_to_child(b_waiting, b, b_starter, B_MARK)
    b_decided = drive(
        services.run_start(
            pipeline="gated",
            inputs={"version": "2", "secret": B_MARK},
            actor=b_starter,
            organization=b,
        )
    )
    approvals.task_approve(task_id=open_task(b_decided).pk, user=b_reviewer, comment=B_MARK)
    b_decided = drive(b_decided)
    b_hook = Webhook.objects.create(
        organization=b, url=f"https://hooks.example.com/{B_MARK}", events=["run.finished"]
    )
    b_token, _ = token_create(user=b_starter, organization=b, name=B_MARK)
    b_schedule = schedules.schedule_create(
        pipeline="gated",
        actor=b_admin,
        organization=b,
        name="bravo-nightly",
        cron="0 2 * * *",
        inputs={"version": "1", "secret": B_MARK},
    )
    b_inbound = inbound.hook_create(pipeline="gated", name=B_MARK, organization=b)
    b_grant = PipelineGrant.objects.create(
        pipeline=Pipeline.objects.get(organization=b, name=B_ONLY_NAME),
        user=b_reviewer,
        role="viewer",
    )

    # A: the same names, private, with a grant for each pipeline role.
    users = {
        "member": person("a-member", a),
        "viewer": person("a-viewer", a),
        "starter": person("a-starter", a),
        "operator": person("a-operator", a),
        "reviewer": person("a-reviewer", a),
        "admin": person("a-admin", a, "admin"),
        "staff": person("a-staff", a, is_staff=True),
    }
    users["reviewer"].groups.add(reviewers)
    users["staff"].user_permissions.set(
        Permission.objects.filter(
            codename__startswith="view_",
            content_type__app_label__in=(
                "pipelines",
                "approvals",
                "webhooks",
                "tokens",
                "inbound",
                "orgs",
                "schedules",
            ),
        )
    )
    for spec in (gated(A_MARK), intake(A_MARK)):
        services.pipeline_create(spec=spec, organization=a, member_role="")
    a_gated = Pipeline.objects.get(organization=a, name="gated")
    for role in ("viewer", "starter", "operator"):
        PipelineGrant.objects.create(pipeline=a_gated, user=users[role], role=role)
    a_run = drive(
        services.run_start(
            pipeline="gated",
            inputs={"version": "1", "secret": A_MARK},
            actor=users["starter"],
            organization=a,
        )
    )
    token_create(user=users["admin"], organization=a, name="a-ci")

    b_runs = [b_waiting.pk, b_decided.pk, b_envelope.child_run_id]
    return {
        "a": a,
        "b": b,
        "users": users,
        "a_run": a_run,
        "b_runs": b_runs,
        "b_tasks": list(HumanTask.objects.filter(organization=b).values_list("pk", flat=True)),
        "b_envelopes": [b_envelope.pk],
        "b_tokens": [b_token.pk],
        "b_webhooks": [b_hook.pk],
        "b_inbound_hooks": [b_inbound.pk],
        "b_inbound_tokens": [b_inbound.token],
        "b_memberships": list(
            Membership.objects.filter(organization=b).values_list("pk", flat=True)
        ),
        "b_pipelines": list(Pipeline.objects.filter(organization=b).values_list("pk", flat=True)),
        "b_grants": [b_grant.pk],
        "b_schedules": [b_schedule.pk],
        "b_users": [b_admin, b_starter, b_reviewer],
    }


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[dict[str, Any]]:
    """Built once for the module in a transaction that is rolled back at its end."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield seed()
        transaction.set_rollback(True)


def b_state(world: dict[str, Any]) -> dict[str, Any]:
    """What a request could change of B (its refusals included: they would be B's too)."""
    b = world["b"]
    return {
        "runs": list(
            Run.objects.filter(organization=b)
            .order_by("pk")
            .values_list("pk", "status", "generation", "audit_seq")
        ),
        "steps": list(
            StepRun.objects.filter(organization=b).order_by("pk").values_list("pk", "status")
        ),
        "tasks": list(
            HumanTask.objects.filter(organization=b)
            .order_by("pk")
            .values_list("pk", "status", "claimed_by_id", "assignee_id")
        ),
        "decisions": Decision.objects.filter(organization=b).count(),
        "audit": {run: AuditEntry.objects.filter(run_id=run).count() for run in world["b_runs"]},
        "pipeline_audit": AuditEntry.objects.filter(organization=b, run=None).count(),
        "checkpoints": Checkpoint.objects.filter(organization=b).count(),
        "pipelines": list(
            Pipeline.objects.filter(organization=b).values_list("pk", "member_role", "audit_seq")
        ),
        "envelopes": list(
            HandoffEnvelope.objects.filter(organization=b).values_list("pk", "acknowledged_at")
        ),
        "memberships": list(
            Membership.objects.filter(organization=b).order_by("pk").values_list("pk", "role")
        ),
        "grants": list(
            PipelineGrant.objects.filter(pipeline__organization=b)
            .order_by("pk")
            .values_list("pk", "user_id", "group_id", "role")
        ),
        "webhooks": list(
            Webhook.objects.filter(organization=b).values_list("pk", "url", "secret_encrypted")
        ),
        "tokens": list(ApiToken.objects.filter(organization=b).values_list("pk", "revoked_at")),
        "schedules": list(
            Schedule.objects.filter(organization=b).values_list("pk", "enabled", "cron", "inputs")
        ),
        "inbound_hooks": list(
            InboundHook.objects.filter(organization=b).values_list("pk", "secret_encrypted")
        ),
        "inbound_runs": Run.objects.filter(organization=b).count(),
    }


# --- filling the URL conf with B's ids ---------------------------------------------------


def b_values(name: str, param: str, world: dict[str, Any]) -> list[Any]:
    """Every value of B a parameter can take; shared pipeline names are not B's alone."""
    if param == "name":
        return [*SHARED_NAMES, B_ONLY_NAME]
    if param in ("run_id",):
        return world["b_runs"]
    if param == "task_id":
        return world["b_tasks"]
    if param == "envelope_id":
        return world["b_envelopes"]
    if param == "action":
        return ["pause", "resume"] if name == "schedule-toggle" else list(TASK_ACTIONS)
    for key in ("membership", "pipeline", "grant", "token", "webhook", "schedule"):
        if param == f"{key}_id":
            return world[f"b_{key}s"]
    if param == "format":
        return [".json"]
    if param == "token":
        return world["b_inbound_tokens"]
    if param == "pk":
        for word, key in (
            ("inbound", "b_inbound_hooks"),
            ("task", "b_tasks"),
            ("handoff", "b_envelopes"),
            ("token", "b_tokens"),
            ("webhook", "b_webhooks"),
            ("schedule", "b_schedules"),
        ):
            if word in name:
                return world[key]
        return world["b_runs"]
    raise AssertionError(f"no value of B for {param!r} of {name!r}")


def b_urls(world: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(name, path, names an object only B has) for every page and API URL."""
    made = []
    for name, params in url_names():
        if name.startswith("admin:"):
            continue
        if not params:
            made.append((name, reverse(name), False))
            continue
        choices = [b_values(name, p, world) for p in params]
        for values in itertools.product(*choices):
            kwargs = dict(zip(params, values, strict=True))
            only_b = kwargs.get("name", B_ONLY_NAME) == B_ONLY_NAME
            if name == "inbound-receive":
                # Public: its answer hangs on the delivery's signature, not on who asks
                # (an unsigned POST is a 401 for everyone; docs/security.md).
                only_b = False
            made.append((name, reverse(name, kwargs=kwargs), only_b))
    return made


def body_for(name: str) -> dict[str, Any]:
    """A body with which the request would do something, had it reached B's object."""
    if name in ALLOWED:
        return ALLOWED[name][1]
    if name.startswith("api:task-"):
        return ALLOWED["api:task-reject"][1]
    return {"comment": "x", "to_step": "build", "decision": "done", "checkpoint": 1}


def session_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def token_client(user: Any, org: Organization) -> Client:
    _, key = token_create(user=user, organization=org, name="walk")
    return Client(headers={"Authorization": f"Token {key}"})


def leaks(response: Any, world: dict[str, Any]) -> str:
    """Why a response gives B away, or ""."""
    code = response.status_code
    # /readyz answers 503, by design, while a check fails (these tests run no beat).
    if code >= 500 and not (code == 503 and response.request["PATH_INFO"] == "/readyz"):
        return f"{code}"
    content = b"".join(response) if response.streaming else response.content
    if B_MARK.encode() in content:
        return f"{code} shows B's data"
    return ""


def walk(
    client: Client,
    urls: list[tuple[str, str, bool]],
    world: dict[str, Any],
    closed: set[tuple[str, str]],
    **headers: str,
) -> list[str]:
    """GET and POST every URL; `closed` holds the (method, path) pairs that answered 405
    to an earlier walker, which a method check refuses before anything else runs: later
    walkers skip them (the walk stays within seconds)."""
    problems = []
    for (name, url, only_b), method in itertools.product(urls, ("get", "post")):
        if name in ("logout", "oidc_logout") or (method, url) in closed:
            continue  # the logouts end the walker's own session, nothing of B
        cache.clear()  # rate limits: each request judged on its own
        api = url.startswith("/api/")
        if method == "get":
            response = client.get(url, headers=headers)
        elif api:
            response = client.post(
                url, body_for(name), content_type="application/json", headers=headers
            )
        else:
            response = client.post(url, body_for(name), headers=headers)
        if response.status_code == 405:
            closed.add((method, url))
        why = leaks(response, world)
        if not why and only_b and response.status_code not in (404, 405):
            why = f"{response.status_code} for an object of B (must be 404)"
        if why:
            problems.append(f"{method.upper()} {url}: {why}")
    return problems


# --- the walks ---------------------------------------------------------------------------


def test_pages_and_api_as_every_kind_of_user_of_a_show_nothing_of_b(db, world):
    before = b_state(world)
    urls = b_urls(world)
    api_urls = [u for u in urls if u[1].startswith("/api/")]
    problems = []
    closed: set[tuple[str, str]] = set()
    # The admin first: the widest view of A, and every method check learned.
    for kind in sorted(KINDS, key=lambda k: k != "admin"):
        client = session_client(world["users"][kind])
        problems += [f"{kind} (session): {p}" for p in walk(client, urls, world, closed)]
    by_token = token_client(world["users"]["admin"], world["a"])
    problems += [f"token of A's admin: {p}" for p in walk(by_token, api_urls, world, closed)]
    assert not problems, "\n".join(problems)
    assert b_state(world) == before


def test_asking_for_b_by_header_is_answered_as_if_it_did_not_exist(db, world):
    """A session user of A naming B (slug or id) in X-Firefly-Organization gets 404 on
    every API URL; a token of A stays in A whatever the header says."""
    before = b_state(world)
    # The spec's JSON Schema is public: the same registry for everyone, no organization.
    urls = [
        u
        for u in b_urls(world)
        if u[1].startswith("/api/v1/") and not u[0].startswith("api-") and u[0] != "api:spec-schema"
    ]
    problems = []
    for kind, wanted in (("admin", "bravo"), ("member", str(world["b"].pk))):
        client = session_client(world["users"][kind])
        for _, url, _ in urls:
            response = client.get(url, headers={"X-Firefly-Organization": wanted})
            why = leaks(response, world)
            if not why and response.status_code != 404:
                why = f"{response.status_code} (must be 404)"
            if why:
                problems.append(f"{kind} as {wanted}: GET {url}: {why}")
    by_token = token_client(world["users"]["admin"], world["a"])
    problems += walk(by_token, urls, world, set(), **{"X-Firefly-Organization": "bravo"})
    assert not problems, "\n".join(problems)
    assert b_state(world) == before
    # The same webhooks and tokens lists refuse B too.
    client = session_client(world["users"]["admin"])
    for url in ("/api/v1/webhooks/", "/api/v1/tokens/"):
        assert client.get(url, headers={"X-Firefly-Organization": "bravo"}).status_code == 404


def test_a_shared_name_means_a_s_own_pipeline(db, world):
    """The name "gated" is in both: in A it is A's, with A's data, never B's."""
    viewer = session_client(world["users"]["viewer"])
    for url in ("/api/v1/pipelines/gated/", "/pipelines/gated/"):
        response = viewer.get(url)
        assert response.status_code == 200, url
        assert A_MARK.encode() in response.content
        assert B_MARK.encode() not in response.content
    runs = viewer.get("/api/v1/runs/?pipeline=gated").json()["results"]
    assert [r["id"] for r in runs] == [world["a_run"].pk]
    # A's gated is private: a member without a grant does not see it, nor B's.
    member = session_client(world["users"]["member"])
    assert member.get("/api/v1/pipelines/gated/").status_code == 404
    assert member.get("/api/v1/pipelines/").json()["results"] == []
    # The reviewer shares B's group but sees only A's task in the inbox.
    reviewer = session_client(world["users"]["reviewer"])
    tasks = reviewer.get("/api/v1/tasks/").json()["results"]
    assert [t["run"] for t in tasks] == [world["a_run"].pk]


# --- Django admin ------------------------------------------------------------------------


def b_admin_urls(world: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(every admin URL with B's objects, the change URLs of B's rows)."""
    b = world["b"]
    urls: list[str] = []
    b_rows: list[str] = []
    for name, params in url_names():
        if not name.startswith("admin:"):
            continue
        if not params:
            urls.append(reverse(name))
            continue
        if params == ["app_label"]:
            apps_ = ("pipelines", "approvals", "webhooks", "schedules", "inbound")
            urls += [reverse(name, args=[app]) for app in apps_]
            continue
        if name == "admin:view_on_site":
            run_type = ContentType.objects.get_for_model(Run).pk
            urls += [reverse(name, args=[run_type, pk]) for pk in world["b_runs"]]
            continue
        app_model = name.split(":", 1)[1].rsplit("_", 1)[0]
        app_label, _, model_name = app_model.partition("_")
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:
            continue
        if not any(f.name == "organization" for f in model._meta.get_fields()):
            continue  # users, groups: no organization of their own
        ids = list(model._default_manager.filter(organization=b).values_list("pk", flat=True))
        if name.endswith("_change"):
            b_rows += [reverse(name, args=[pk]) for pk in ids]
        # A few rows of each table are enough to reach each admin view; the lists are
        # checked for links to every row.
        urls += [reverse(name, args=[pk]) for pk in ids[:2]]
    return urls, b_rows


def test_admin_as_staff_of_a_shows_no_row_of_b(db, world):
    """A staff member of A (not a superuser) who may view every Firefly table."""
    before = b_state(world)
    client = session_client(world["users"]["staff"])
    urls, b_rows = b_admin_urls(world)
    assert b_rows, "B has rows in admin"
    problems = []
    for url in urls:
        response = client.get(url)
        why = leaks(response, world)
        content = response.content if not response.streaming else b""
        shown = [row for row in b_rows if row.encode() in content]
        if not why and shown:
            why = f"{response.status_code} links B's rows {shown[:3]}"
        if not why and url in b_rows and response.status_code not in (302, 404):
            why = f"{response.status_code} for a row of B (must be 404 or back to the list)"
        if why:
            problems.append(f"GET {url}: {why}")
    assert not problems, "\n".join(problems)
    assert b_state(world) == before
