"""Every URL in the URL conf, as every kind of user: no 500, no GET that changes state,
and no unsafe method that works for someone the docs say may not use it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from approvals.models import Decision, HumanTask
from inbound import services as inbound
from inbound.models import InboundDelivery, InboundHook
from orgs.models import Membership, Organization
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
from tokens.models import ApiToken
from tokens.services import token_create
from webhooks.models import Webhook, WebhookDelivery

ROLES = ("anonymous", "outsider", "starter", "reviewer", "staff")
SCHEDULE_ACTIONS = ("pause", "resume", "nonsense")
# /readyz answers 503, by design, while one of its checks fails (these tests run no beat).
NOT_READY = ("readyz", 503)
# Refusals write their own audit entries; everything else they must leave alone.
REFUSALS = ("run.refused", "task.refused")


def url_names() -> Iterator[tuple[str, list[str]]]:
    """(name, parameter names) of every named URL, namespaces included."""

    def walk(patterns: list[Any], namespace: str) -> Iterator[tuple[str, list[str]]]:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                yield from (
                    (name, [*params, *_params(entry)])
                    for name, params in walk(entry.url_patterns, inner)
                )
            elif isinstance(entry, URLPattern) and entry.name:
                yield f"{namespace}{entry.name}", _params(entry)

    seen = set()
    for name, params in walk(get_resolver().url_patterns, ""):
        if name not in seen:
            seen.add(name)
            yield name, params


def _params(entry: URLPattern | URLResolver) -> list[str]:
    pattern = entry.pattern
    converters = getattr(pattern, "converters", None)
    if converters:
        return list(converters)
    return list(pattern.regex.groupindex)


@pytest.fixture
def world(users, waiting_run, hand_off, django_user_model) -> dict[str, Any]:
    """One of everything a URL can name: a run waiting at its gate (started by `starter`,
    reviewed by `reviewers`), its task, a handoff, a webhook, an API token of `starter`."""
    run = waiting_run()
    task = HumanTask.objects.get(run=run, status="open")
    envelope = hand_off(run)
    # A row as an admin would have made it (its URL checks have tests of their own).
    hook = Webhook.objects.create(
        organization=Organization.objects.default(),
        url="https://hooks.example.com/firefly",
        events=["run.finished"],
    )
    token, _ = token_create(user=users["starter"], name="ci")
    # For the organization page: a user to add, a member to change, a grant to remove.
    django_user_model.objects.create_user("newcomer", password="x")
    pipeline = Pipeline.objects.get(name="gated")
    grant = PipelineGrant.objects.create(pipeline=pipeline, user=users["r2"], role="viewer")
    schedule = schedules.schedule_create(
        pipeline="gated",
        actor=users["boss"],
        name="nightly",
        cron="0 2 * * *",
        inputs={"version": "1"},
    )
    inbound_hook = inbound.hook_create(pipeline="gated", name="ci")
    return {
        "schedule": schedule,
        "inbound_hook": inbound_hook,
        "run": run,
        "task": task,
        "envelope": envelope,
        "webhook": hook,
        "token": token,
        "pipeline": pipeline,
        "grant": grant,
        "membership": Membership.objects.get(user=users["outsider"]),
    }


def clients(users: dict[str, Any]) -> dict[str, tuple[Client, Any]]:
    made: dict[str, tuple[Client, Any]] = {"anonymous": (Client(), None)}
    for role, name in (
        ("outsider", "outsider"),
        ("starter", "starter"),
        ("reviewer", "r1"),
        ("staff", "boss"),
    ):
        client = Client()
        client.force_login(users[name])
        made[role] = (client, users[name])
    return made


def concrete_urls(world: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, path) for every named URL, parameters filled with the world's objects."""
    task_actions = (
        "approve",
        "reject",
        "rollback",
        "complete",
        "claim",
        "unclaim",
        "break_claim",
        "nonsense",
    )
    urls = []
    for name, params in url_names():
        if name in ("admin:view_on_site",):
            kwargs = {
                "content_type_id": ContentType.objects.get_for_model(Run).pk,
                "object_id": world["run"].pk,
            }
            urls.append((name, reverse(name, kwargs=kwargs)))
            continue
        if name == "task-action":
            urls += [(name, reverse(name, args=[world["task"].pk, a])) for a in task_actions]
            continue
        if name == "schedule-toggle":
            pk = world["schedule"].pk
            urls += [(name, reverse(name, args=["gated", pk, a])) for a in SCHEDULE_ACTIONS]
            continue
        kwargs = {p: _fill(name, p, world) for p in params}
        urls.append((name, reverse(name, kwargs=kwargs)))
    urls.append(("api-catch-all", "/api/v1/no-such-thing/"))
    return urls


def _fill(name: str, param: str, world: dict[str, Any]) -> Any:
    if param == "app_label":
        return "pipelines"
    if param == "name":
        return "gated"
    if param in ("run_id",):
        return world["run"].pk
    if param == "task_id":
        return world["task"].pk
    if param == "envelope_id":
        return world["envelope"].pk
    if param == "format":
        return ".json"
    if param == "token":
        return world["inbound_hook"].token
    if param in (
        "membership_id",
        "pipeline_id",
        "grant_id",
        "token_id",
        "webhook_id",
        "schedule_id",
    ):
        return world[param.removesuffix("_id")].pk
    if name.startswith("admin:") and param in ("object_id", "id"):
        app_model = name.split(":", 1)[1].rsplit("_", 1)[0]
        app_label, _, model_name = app_model.partition("_")
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:
            return 1
        first = model._default_manager.order_by("pk").values_list("pk", flat=True).first()
        return first or 1
    if param == "pk":
        if "inbound" in name:
            return world["inbound_hook"].pk
        if "task" in name:
            return world["task"].pk
        if "handoff" in name:
            return world["envelope"].pk
        if "webhook" in name:
            return world["webhook"].pk
        if "token" in name:
            return world["token"].pk
        if "schedule" in name:
            return world["schedule"].pk
        return world["run"].pk
    raise AssertionError(f"no value for {param!r} of {name!r}")


def state() -> dict[str, Any]:
    """What a request could change, apart from the audit entries of refusals."""
    return {
        "runs": list(Run.objects.order_by("pk").values_list("pk", "status", "generation")),
        "steps": list(StepRun.objects.order_by("pk").values_list("pk", "status")),
        "tasks": list(
            HumanTask.objects.order_by("pk").values_list(
                "pk", "status", "claimed_by_id", "assignee_id", "assignee_role_id"
            )
        ),
        "decisions": Decision.objects.count(),
        "checkpoints": Checkpoint.objects.count(),
        "envelopes": list(
            HandoffEnvelope.objects.order_by("pk").values_list("pk", "acknowledged_at")
        ),
        "webhooks": list(
            Webhook.objects.order_by("pk").values_list("pk", "url", "active", "secret_encrypted")
        ),
        "deliveries": WebhookDelivery.objects.count(),
        "audit": AuditEntry.objects.exclude(event__in=REFUSALS).count(),
        "tokens": list(ApiToken.objects.order_by("pk").values_list("pk", "revoked_at")),
        "inbound_hooks": list(
            InboundHook.objects.order_by("pk").values_list("pk", "enabled", "secret_encrypted")
        ),
        "inbound_accepted": InboundDelivery.objects.filter(outcome="accepted").count(),
        "memberships": list(
            Membership.objects.order_by("pk").values_list(
                "pk", "user_id", "organization_id", "role"
            )
        ),
        "grants": list(
            PipelineGrant.objects.order_by("pk").values_list("pk", "user_id", "group_id", "role")
        ),
        "member_roles": list(Pipeline.objects.order_by("pk").values_list("pk", "member_role")),
        "schedules": list(
            Schedule.objects.order_by("pk").values_list("pk", "name", "enabled", "cron", "inputs")
        ),
    }


def test_every_get_as_everyone_changes_nothing_and_never_fails(users, world):
    before = state()
    made = clients(users)
    problems = []
    for name, url in concrete_urls(world):
        for role in ROLES:
            client, _ = made[role]
            for variant in ("", "?part=live", "?part=audit", "?part=handoffs", "?part=panel"):
                if variant and not (name in ("run", "task") and not url.startswith("/api/")):
                    continue
                headers = {"HX-Request": "true"} if variant else {}
                response = client.get(url + variant, headers=headers)
                if response.status_code >= 500 and (name, response.status_code) != NOT_READY:
                    problems.append(f"GET {url}{variant} as {role}: {response.status_code}")
        now = state()
        if now != before:
            problems.append(f"GET {url} (as someone) changed state")
            before = now
    assert not problems, "\n".join(problems)


# Who the docs (README, docs/api.md) say may use each unsafe endpoint, and a body with
# which they would succeed. Everyone else must get no 2xx and change nothing.
ALLOWED: dict[str, tuple[set[str], dict[str, Any]]] = {
    "api:pipelines": ({"staff"}, {"name": "new-one", "steps": [{"name": "a", "type": "noop"}]}),
    "api:run-start": ({"outsider", "starter", "reviewer", "staff"}, {"inputs": {"version": "2"}}),
    "api:run-cancel": ({"starter", "staff"}, {}),
    "api:run-resume": ({"starter", "staff"}, {}),
    "api:run-fork": ({"starter", "staff"}, {"checkpoint": 1}),
    "api:handoff-acknowledge": ({"starter", "staff"}, {"decision": "done"}),
    # Schedules: authors of the organization who operate the pipeline (here, its admin).
    "api:schedules": ({"staff"}, {"name": "often", "every_s": 60, "inputs": {"version": "1"}}),
    "schedule-toggle": ({"staff"}, {}),
    "api:task-approve": ({"reviewer"}, {}),
    "api:task-reject": ({"reviewer"}, {"comment": "no"}),
    "api:task-rollback": ({"reviewer"}, {"to_step": "build"}),
    "api:task-complete": ({"reviewer"}, {"choice": "x"}),
    "api:task-claim": ({"reviewer"}, {}),
    "api:task-unclaim": ({"reviewer"}, {}),
    "api:task-break-claim": ({"staff"}, {}),
    "api-webhooks": (
        {"staff"},
        {"url": "https://hooks.example.com/other", "events": ["run.finished"]},
    ),
    # Anyone signed in makes tokens for themselves; a token is revoked by its owner or staff.
    "api-tokens": ({"outsider", "starter", "reviewer", "staff"}, {"name": "mine"}),
    "api-token-revoke": ({"starter", "staff"}, {}),
    # A pipeline's inbound hooks: its organization's admins. The hook's own URL takes
    # signed deliveries only (a POST without a signature changes nothing, below).
    "api-inbound-hooks": ({"staff"}, {"name": "another"}),
    "api-inbound-hook-rotate": ({"staff"}, {}),
    "run-cancel": ({"starter", "staff"}, {}),
    "run-resume": ({"starter", "staff"}, {}),
    "run-fork": ({"starter", "staff"}, {"checkpoint": 1}),
    "handoff-acknowledge": ({"starter", "staff"}, {"decision": "done"}),
    "pipeline-start": (
        {"outsider", "starter", "reviewer", "staff"},
        {"inputs": '{"version": "2"}'},
    ),
    "task-action": ({"reviewer", "staff"}, {"comment": "no", "to_step": "build"}),
    # The organization page: its admins manage members, grants and webhooks; everyone
    # makes their own tokens and switches among their own organizations.
    "org-switch": ({"outsider", "starter", "reviewer", "staff"}, {"organization": "default"}),
    "org-member-add": ({"staff"}, {"username": "newcomer", "role": "member"}),
    "org-member-role": ({"staff"}, {"role": "author"}),
    "org-member-remove": ({"staff"}, {}),
    "org-pipeline-member-role": ({"staff"}, {"role": "operator"}),
    "org-grant-add": ({"staff"}, {"name": "outsider", "role": "viewer"}),
    "org-grant-remove": ({"staff"}, {}),
    "org-token-create": ({"outsider", "starter", "reviewer", "staff"}, {"name": "mine"}),
    "org-token-revoke": ({"starter", "staff"}, {}),
    "org-webhook-create": (
        {"staff"},
        {"url": "https://hooks.example.com/other", "events": ["run.finished"]},
    ),
    "org-webhook-deactivate": ({"staff"}, {}),
    # Signing in and out change only the caller's own session.
    "login": (set(ROLES), {"username": "starter", "password": "wrong"}),
    "logout": (set(ROLES), {}),
    # Single sign-on: the way to the provider and its answer are GET only (404 while it is
    # off); its logout, like the other, ends only the caller's own session.
    "oidc_authentication_init": (set(), {}),
    "oidc_authentication_callback": (set(), {}),
    "oidc_logout": (set(ROLES), {}),
    # The probes answer GET and HEAD only, to anyone.
    "healthz": (set(), {}),
    "readyz": (set(), {}),
}


@pytest.mark.parametrize("name", list(ALLOWED))
def test_unsafe_methods_only_for_whom_the_docs_allow(users, world, name):
    """Those who may not go first (each must change nothing), then those who may."""
    allowed, body = ALLOWED[name]
    made = clients(users)
    urls = [url for n, url in concrete_urls(world) if n == name]
    assert urls, f"{name} is not in the URL conf"
    for url in urls:
        may = _allowed_for(url, allowed)
        for role in sorted(ROLES, key=lambda r: r in may):
            client, _ = made[role]
            before = state()
            if url.startswith("/api/"):
                response = client.post(url, body, content_type="application/json")
            else:
                response = client.post(url, body)
            assert response.status_code < 500, (url, role, response.status_code)
            if role in may:
                continue
            if url.startswith("/api/"):
                assert not 200 <= response.status_code < 300, (url, role, response.status_code)
            assert state() == before, f"POST {url} as {role} changed state"


def _allowed_for(url: str, allowed: set[str]) -> set[str]:
    """A task page's actions: break_claim is for staff, the rest for the task's reviewers."""
    if "/schedules/" in url and url.endswith("/nonsense/"):
        return set()
    if "/tasks/" not in url or url.startswith("/api/"):
        return allowed
    action = url.rstrip("/").rsplit("/", 1)[1]
    if action == "break_claim":
        return {"staff"}
    return {"reviewer"} if action != "nonsense" else set()


# API URLs whose PUT, PATCH and DELETE the docs allow to some (docs/api.md).
WRITABLE: dict[str, set[str]] = {
    "api:schedule": {"staff"},
    # Everyone's own notification preferences (tests/api/test_notifications_api.py).
    "api:my-notifications": {"outsider", "starter", "reviewer", "staff"},
}


# DELETE that works, for whom the docs say (the everywhere test below skips them).
DELETES: dict[str, set[str]] = {
    "api-inbound-hook": {"staff"},
    # Everyone's own delegation: ending none changes nothing (tests/api/test_delegation_api.py).
    "api:my-delegation": {"outsider", "starter", "reviewer", "staff"},
}


def test_deletes_only_for_whom_the_docs_allow(users, world):
    made = clients(users)
    for name, allowed in DELETES.items():
        [url] = [url for n, url in concrete_urls(world) if n == name]
        for role in sorted(ROLES, key=lambda r: r in allowed):
            before = state()
            code = made[role][0].delete(url).status_code
            if role in allowed:
                assert code == 204, (url, role, code)
                continue
            assert code in (401, 403, 404), (url, role, code)
            assert state() == before, f"DELETE {url} as {role} changed state"


def test_unsafe_methods_everywhere_never_fail(users, world):
    """PUT, PATCH and DELETE on every API URL, and POST on every URL not listed above:
    refused, never a 500, and nothing changes."""
    made = clients(users)
    before = state()
    problems = []
    for name, url in concrete_urls(world):
        api = url.startswith("/api/")
        methods = (["put", "patch", "delete"] if api else []) + (
            [] if name in ALLOWED else ["post"]
        )
        for role, method in ((role, method) for role in ROLES for method in methods):
            if role in WRITABLE.get(name, ()):
                continue  # allowed to them (tests/schedules/test_api.py)
            if method == "delete" and role in DELETES.get(name, set()):
                continue
            status = getattr(made[role][0], method)(url, {}, content_type="application/json")
            code = status.status_code
            if code >= 500 or (api and 200 <= code < 300):
                problems.append(f"{method.upper()} {url} as {role}: {code}")
    assert not problems, "\n".join(problems)
    assert state() == before
