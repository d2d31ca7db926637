"""The organization page (members, grants, tokens, webhooks) and the header's switcher."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command

from orgs.middleware import SESSION_KEY
from orgs.models import Membership, Organization
from pipelines import services
from pipelines.models import AuditEntry, Pipeline, PipelineGrant, Run, SecurityEvent
from tokens.models import ApiToken
from tokens.services import token_create
from webhooks.models import Webhook

SPEC = {"name": "release", "steps": [{"name": "build", "type": "noop"}]}


@pytest.fixture
def tenants(db: Any, django_user_model: Any) -> dict[str, Any]:
    """Acme and Globex, each with a pipeline "release" and one run of it.

    alice administers Acme, bob is a plain member of it, carol administers Globex, and
    dave is a member of both."""
    acme = Organization.objects.create(slug="acme", name="Acme")
    globex = Organization.objects.create(slug="globex", name="Globex")
    users = {
        name: django_user_model.objects.create_user(name, password="x")
        for name in ("alice", "bob", "carol", "dave", "erin")
    }
    for name, org, role in (
        ("alice", acme, "admin"),
        ("bob", acme, "member"),
        ("carol", globex, "admin"),
        ("dave", acme, "member"),
        ("dave", globex, "member"),
    ):
        Membership.objects.create(user=users[name], organization=org, role=role)
    world: dict[str, Any] = {"acme": acme, "globex": globex, **users}
    for org in (acme, globex):
        services.pipeline_create(spec=SPEC, organization=org, member_role="viewer")
        world[f"{org.slug}_run"] = services.run_start(
            pipeline="release", inputs={}, organization=org
        )
        world[f"{org.slug}_pipeline"] = Pipeline.objects.get(organization=org, name="release")
    return world


def login(client: Any, user: Any, org: Organization | None = None) -> Any:
    client.force_login(user)
    if org is not None:
        session = client.session
        session[SESSION_KEY] = org.slug
        session.save()
    return client


def test_an_admin_sees_members_pipelines_tokens_and_webhooks(client, tenants):
    Webhook.objects.create(
        organization=tenants["acme"], url="https://hooks.example.com/acme", events=["run.failed"]
    )
    Webhook.objects.create(
        organization=tenants["globex"], url="https://hooks.example.com/globex", events=["x"]
    )
    page = login(client, tenants["alice"]).get("/org/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Acme" in html
    assert "bob" in html
    assert "dave" in html
    assert "release" in html
    assert "hooks.example.com/acme" in html
    # Nothing of the other organization: its admin, its webhook.
    assert "carol" not in html
    assert "hooks.example.com/globex" not in html


def test_a_plain_member_sees_only_their_memberships_and_tokens(client, tenants):
    token_create(user=tenants["alice"], name="alice-ci", organization=tenants["acme"])
    token_create(user=tenants["bob"], name="bob-ci", organization=tenants["acme"])
    html = login(client, tenants["bob"]).get("/org/").content.decode()
    assert "bob-ci" in html
    assert "alice-ci" not in html
    assert "Add a user" not in html
    assert "Webhooks" not in html


def test_an_admin_adds_a_member_changes_their_role_and_removes_them(client, tenants):
    client = login(client, tenants["alice"])
    response = client.post("/org/members/", {"username": "erin", "role": "author"})
    assert response.status_code == 302
    membership = Membership.objects.get(user=tenants["erin"], organization=tenants["acme"])
    assert membership.role == "author"
    client.post(f"/org/members/{membership.pk}/role/", {"role": "member"})
    membership.refresh_from_db()
    assert membership.role == "member"
    client.post(f"/org/members/{membership.pk}/remove/")
    assert not Membership.objects.filter(pk=membership.pk).exists()
    recorded = SecurityEvent.objects.filter(organization=tenants["acme"]).values_list(
        "event", flat=True
    )
    assert {"membership.added", "membership.role_changed", "membership.removed"} <= set(recorded)


def test_the_last_admin_cannot_step_down(client, tenants):
    client = login(client, tenants["alice"])
    mine = Membership.objects.get(user=tenants["alice"], organization=tenants["acme"])
    response = client.post(f"/org/members/{mine.pk}/role/", {"role": "member"}, follow=True)
    assert "last admin" in response.content.decode()
    mine.refresh_from_db()
    assert mine.role == "admin"
    assert SecurityEvent.objects.filter(event="organization.refused", actor=tenants["alice"])


def test_an_admin_grants_and_removes_roles_and_opens_a_pipeline(client, tenants):
    pipeline = tenants["acme_pipeline"]
    Group.objects.create(name="qa")
    client = login(client, tenants["alice"])
    client.post(f"/org/pipelines/{pipeline.pk}/grants/", {"name": "bob", "role": "operator"})
    client.post(
        f"/org/pipelines/{pipeline.pk}/grants/",
        {"holder": "group", "name": "qa", "role": "starter"},
    )
    grants = {(g.user_id, g.group_id, g.role) for g in PipelineGrant.objects.all()}
    assert (tenants["bob"].pk, None, "operator") in grants
    assert len(grants) == 2
    client.post(f"/org/pipelines/{pipeline.pk}/member-role/", {"role": ""})
    pipeline.refresh_from_db()
    assert pipeline.member_role == ""
    bob_grant = PipelineGrant.objects.get(user=tenants["bob"])
    client.post(f"/org/grants/{bob_grant.pk}/remove/")
    assert not PipelineGrant.objects.filter(pk=bob_grant.pk).exists()
    events = list(
        AuditEntry.objects.filter(pipeline=pipeline, run__isnull=True)
        .order_by("seq")
        .values_list("event", "actor_name")
    )
    assert events[-4:] == [
        ("pipeline.grant_set", "alice"),
        ("pipeline.grant_set", "alice"),
        ("pipeline.member_role_set", "alice"),
        ("pipeline.grant_removed", "alice"),
    ]


def test_a_member_may_not_change_anything(client, tenants):
    pipeline = tenants["acme_pipeline"]
    client = login(client, tenants["bob"])
    attempts = [
        ("/org/members/", {"username": "erin", "role": "admin"}),
        (f"/org/pipelines/{pipeline.pk}/grants/", {"name": "bob", "role": "operator"}),
        (f"/org/pipelines/{pipeline.pk}/member-role/", {"role": "operator"}),
    ]
    for url, body in attempts:
        assert client.post(url, body).status_code == 403, url
    assert not PipelineGrant.objects.exists()
    assert not Membership.objects.filter(user=tenants["erin"]).exists()
    pipeline.refresh_from_db()
    assert pipeline.member_role == "viewer"
    assert (
        SecurityEvent.objects.filter(event="organization.refused", actor=tenants["bob"]).count()
        == 3
    )


def test_an_admin_of_another_organization_gets_404_for_acme_objects(client, tenants):
    grant = PipelineGrant.objects.create(
        pipeline=tenants["acme_pipeline"], user=tenants["bob"], role="viewer"
    )
    bob = Membership.objects.get(user=tenants["bob"])
    hook = Webhook.objects.create(
        organization=tenants["acme"], url="https://hooks.example.com/a", events=["run.failed"]
    )
    client = login(client, tenants["carol"])
    for url, body in (
        (f"/org/grants/{grant.pk}/remove/", {}),
        (f"/org/members/{bob.pk}/role/", {"role": "admin"}),
        (f"/org/members/{bob.pk}/remove/", {}),
        (f"/org/pipelines/{tenants['acme_pipeline'].pk}/member-role/", {"role": "operator"}),
        (
            f"/org/pipelines/{tenants['acme_pipeline'].pk}/grants/",
            {"name": "carol", "role": "viewer"},
        ),
        (f"/org/webhooks/{hook.pk}/deactivate/", {}),
    ):
        assert client.post(url, body).status_code == 404, url
    assert PipelineGrant.objects.filter(pk=grant.pk).exists()
    bob.refresh_from_db()
    assert bob.role == "member"
    hook.refresh_from_db()
    assert hook.active
    refused = SecurityEvent.objects.filter(event="organization.refused", actor=tenants["carol"])
    assert refused.count() == 6


def test_tokens_are_made_for_yourself_shown_once_and_revoked(client, tenants):
    client = login(client, tenants["bob"])
    page = client.post("/org/tokens/", {"name": "laptop", "expires_in_days": "7"})
    assert page.status_code == 200
    assert page.headers["Cache-Control"].startswith("max-age=0")
    token = ApiToken.objects.get(name="laptop")
    assert token.user == tenants["bob"]
    assert token.organization == tenants["acme"]
    key = page.context["new_token_key"]
    assert key in page.content.decode()
    assert key not in client.get("/org/").content.decode()
    client.post(f"/org/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked_at is not None
    # Someone else's token: not there.
    other, _ = token_create(user=tenants["dave"], name="dave-ci", organization=tenants["acme"])
    assert client.post(f"/org/tokens/{other.pk}/revoke/").status_code == 404
    other.refresh_from_db()
    assert other.revoked_at is None


def test_bad_token_and_webhook_input_is_named_not_a_500(client, tenants):
    client = login(client, tenants["alice"])
    for body in ({"name": ""}, {"name": "x" * 500}, {"name": "ok", "expires_in_days": "-3"}):
        page = client.post("/org/tokens/", body, follow=True)
        assert page.status_code == 200
        assert "msg-error" in page.content.decode()
    assert not ApiToken.objects.exists()
    hooks: tuple[dict[str, Any], ...] = (
        {"url": "https://" + "a" * 600 + ".example.com", "events": ["run.failed"]},
        {"url": "https://hooks.example.com/x", "events": ["nonsense"]},
        {"url": "https://hooks.example.com/x"},
    )
    for hook in hooks:
        page = client.post("/org/webhooks/", hook, follow=True)
        assert page.status_code == 200
        assert "msg-error" in page.content.decode()
    assert not Webhook.objects.exists()


def test_webhooks_are_created_with_their_secret_shown_once_and_deactivated(
    client, tenants, settings
):
    # A receiver on this machine, allowed as the webhook tests allow theirs.
    settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1:9"]
    settings.FIREFLY_OUTBOUND_ALLOWED_ADDRESSES = ["127.0.0.1"]
    client = login(client, tenants["alice"])
    page = client.post(
        "/org/webhooks/", {"url": "http://127.0.0.1:9/acme", "events": ["run.failed"]}
    )
    assert page.status_code == 200, page.content.decode()
    hook = Webhook.objects.get()
    assert hook.organization == tenants["acme"]
    assert hook.created_by == tenants["alice"]
    assert page.context["new_webhook_secret"] in page.content.decode()
    client.post(f"/org/webhooks/{hook.pk}/deactivate/")
    hook.refresh_from_db()
    assert not hook.active
    # A member may not add one.
    bob = login(client, tenants["bob"])
    refused = bob.post("/org/webhooks/", {"url": "http://127.0.0.1:9/b", "events": ["run.failed"]})
    assert refused.status_code == 403
    assert Webhook.objects.count() == 1


def test_the_header_names_the_organization_and_offers_a_switch_to_members_of_several(
    client, tenants
):
    html = login(client, tenants["bob"]).get("/org/").content.decode()
    assert 'class="org-name"' in html
    assert "Acme" in html
    assert "org-switch" not in html
    html = login(client, tenants["dave"]).get("/org/").content.decode()
    assert 'action="/org/switch/"' in html
    assert "Globex" in html


def test_switching_shows_the_other_organizations_runs_only(client, tenants):
    client = login(client, tenants["dave"], tenants["acme"])
    acme_run, globex_run = tenants["acme_run"], tenants["globex_run"]
    runs = client.get("/runs/").context["runs"]
    assert [r.pk for r in runs] == [acme_run.pk]
    response = client.post("/org/switch/", {"organization": "globex", "next": "/runs/"})
    assert response.status_code == 302
    assert response.url == "/runs/"
    assert client.session[SESSION_KEY] == "globex"
    runs = client.get("/runs/").context["runs"]
    assert [r.pk for r in runs] == [globex_run.pk]
    assert client.get(f"/runs/{acme_run.pk}/").status_code == 404
    assert client.get(f"/runs/{globex_run.pk}/").status_code == 200


def test_switching_to_an_organization_you_are_not_in_is_404_and_recorded(client, tenants):
    Organization.objects.create(slug="initech", name="Initech")
    client = login(client, tenants["bob"], tenants["acme"])
    for wanted in ("globex", str(tenants["globex"].pk), "initech", "nope", ""):
        assert client.post("/org/switch/", {"organization": wanted}).status_code == 404
    assert client.session[SESSION_KEY] == "acme"
    assert Run.objects.count() == 2
    assert (
        SecurityEvent.objects.filter(event="organization.refused", actor=tenants["bob"]).count()
        == 5
    )


@pytest.mark.parametrize(
    ("target", "lands"),
    [
        ("/runs/?status=failed", "/runs/?status=failed"),
        ("/pipelines/", "/pipelines/"),
        ("/runs/1/", "/"),
        ("https://evil.example.com/", "/"),
        ("//evil.example.com/runs/", "/"),
        ("/\\evil.example.com", "/"),
        ("", "/"),
    ],
)
def test_a_switch_goes_back_only_to_a_page_of_this_site(client, tenants, target, lands):
    client = login(client, tenants["dave"])
    response = client.post("/org/switch/", {"organization": "globex", "next": target})
    assert response.status_code == 302
    assert response.url == lands


def test_the_switcher_works_without_javascript_from_the_keyboard(client, tenants):
    html = login(client, tenants["dave"]).get("/runs/").content.decode()
    # A labelled select and a real submit button in a plain POST form.
    assert '<label for="org-switch-select"' in html
    assert '<select id="org-switch-select" name="organization">' in html
    assert '<button type="submit" class="small">Switch</button>' in html


def test_the_demo_ships_two_organizations_with_the_same_pipeline_names(db, settings, client):
    settings.FIREFLY_DEMO = True
    out = StringIO()
    call_command("load_demo", stdout=out)
    call_command("load_demo", stdout=StringIO())  # idempotent
    assert "demo user engineer / firefly-engineer  in acme author, globex member" in out.getvalue()
    names = {
        slug: set(Pipeline.objects.filter(organization__slug=slug).values_list("name", flat=True))
        for slug in ("acme", "globex")
    }
    assert names["acme"]
    assert names["acme"] == names["globex"]
    users = get_user_model().objects
    seen = {}
    for username in ("reviewer1", "reviewer3"):
        client.force_login(users.get(username=username))
        page = client.get("/pipelines/")
        seen[username] = {p.pk for p in page.context["pipelines"]}
        assert len(seen[username]) == len(names["acme"])
    assert not seen["reviewer1"] & seen["reviewer3"]
    client.force_login(users.get(username="engineer"))
    assert 'action="/org/switch/"' in client.get("/").content.decode()
