"""Single sign-on against a real OpenID Connect provider: the whole authorization-code flow,
memberships from the group claim, and every spoiled ID token refused and recorded."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from accounts.models import Identity, ProvidedMembership
from orgs.models import Membership, Organization
from pipelines.models import SecurityEvent
from tests.sso.conftest import sign_in_through_provider

User = get_user_model()


@pytest.fixture
def acme(transactional_db: Any) -> Organization:
    return Organization.objects.create(slug="acme", name="Acme")


def test_sign_in_makes_the_user_a_member_with_the_claimed_role(sso, live_server, acme):
    browser, page = sign_in_through_provider(live_server.url, next_url="/runs/")

    assert page.status_code == 200
    assert page.url == f"{live_server.url}/runs/"
    carol = User.objects.get(username="carol")
    assert carol.email == "carol@example.com"
    assert not carol.has_usable_password()
    assert Identity.objects.get(user=carol).issuer == sso.issuer
    membership = Membership.objects.get(user=carol)
    assert (membership.organization, membership.role) == (acme, "author")
    assert ProvidedMembership.objects.filter(membership=membership).exists()
    # The unknown organization in the claim was not created.
    assert not Organization.objects.filter(slug="no-such-org").exists()
    # Signed in: a page that needs a user loads, in her organization.
    assert browser.get(f"{live_server.url}/pipelines/", timeout=10).status_code == 200
    assert not SecurityEvent.objects.filter(event="sso.refused").exists()


def test_the_next_sign_in_follows_the_claim_and_leaves_local_memberships(sso, live_server, acme):
    sign_in_through_provider(live_server.url)
    carol = User.objects.get(username="carol")
    beta = Organization.objects.create(slug="beta", name="Beta")
    local = Membership.objects.create(user=carol, organization=beta, role="member")

    # The provider now makes her an admin of acme and lists beta as well...
    sso.configure(carol={"groups": ["firefly:acme:admin", "firefly:beta:admin"]})
    sign_in_through_provider(live_server.url)
    assert Membership.objects.get(user=carol, organization=acme).role == "admin"
    # ...but beta's membership was given in Firefly: the provider does not manage it.
    local.refresh_from_db()
    assert local.role == "member"

    # Dropped from acme at the provider: the membership it made goes; beta's stays.
    sso.configure(carol={"groups": ["firefly:beta"]})
    sign_in_through_provider(live_server.url)
    assert list(
        Membership.objects.filter(user=carol).values_list("organization__slug", "role")
    ) == [("beta", "member")]


def test_plain_groups_become_django_groups_when_asked(sso, live_server, acme, settings):
    settings.FIREFLY_OIDC_SYNC_GROUPS = True
    reviewers = Group.objects.create(name="reviewers")
    Group.objects.create(name="finance")

    sign_in_through_provider(live_server.url)

    assert list(User.objects.get(username="carol").groups.all()) == [reviewers]
    assert not Group.objects.filter(name__startswith="firefly:").exists()


def test_a_provider_cannot_take_over_a_local_account_by_naming_it(sso, live_server, acme):
    local = User.objects.create_user("carol", password="local-password-of-carol", is_staff=True)

    browser, page = sign_in_through_provider(live_server.url)

    assert page.url.endswith("/login/?sso=failed")
    assert "_auth_user_id" not in browser.cookies.get_dict()
    assert not Identity.objects.exists()
    assert not Membership.objects.filter(user=local).exists()
    event = SecurityEvent.objects.get(event="sso.refused")
    assert "does not sign in with this provider" in event.reason
    assert event.actor_name == "carol"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("signature", "signature does not verify"),
        ("claims", "signature does not verify"),
        ("expired", "has expired"),
        ("audience", "not for this client"),
        ("issuer", "another issuer"),
        ("nonce", "nonce does not match"),
    ],
)
def test_a_spoiled_id_token_is_refused_and_recorded(sso, live_server, acme, mode, reason):
    sso.configure(mode=mode)

    browser, page = sign_in_through_provider(live_server.url, next_url="/runs/")

    assert page.url == f"{live_server.url}/login/?sso=failed"
    assert "Single sign-on did not complete" in page.text
    assert not User.objects.filter(username="carol").exists()
    assert not Membership.objects.exists()
    # Not signed in: the runs page sends the browser back to the login page.
    assert browser.get(f"{live_server.url}/runs/", timeout=10).url.startswith(
        f"{live_server.url}/login/"
    )
    event = SecurityEvent.objects.get(event="sso.refused")
    assert reason in event.reason
    assert event.data["issuer"] == sso.issuer
    assert event.address == "127.0.0.1"


def test_declining_at_the_provider_signs_nobody_in_and_is_recorded(sso, live_server, acme):
    _, page = sign_in_through_provider(live_server.url, consent=False)

    assert page.url == f"{live_server.url}/login/?sso=failed"
    assert not User.objects.filter(username="carol").exists()
    assert "error='access_denied'" in SecurityEvent.objects.get(event="sso.refused").reason


def test_a_forged_callback_is_refused_and_recorded(sso, db):
    client = Client()

    response = client.get("/oidc/callback/", {"code": "stolen", "state": "made-up"})

    assert response.status_code == 302
    assert response["Location"] == "/login/?sso=failed"
    assert "no sign-in began in this browser" in SecurityEvent.objects.get().reason


def test_local_passwords_still_work_beside_sso(sso, db):
    User.objects.create_user("dave", password="dave-local-password")
    client = Client()

    page = client.get("/login/?next=/runs/")
    assert "Sign in with Example ID" in page.content.decode()
    assert 'href="/oidc/authenticate/?next=/runs/"' in page.content.decode()
    response = client.post("/login/", {"username": "dave", "password": "dave-local-password"})

    assert response.status_code == 302
    assert client.get("/pipelines/").status_code == 200


def test_without_a_client_id_there_is_no_sso(client, db):
    assert "Sign in with" not in client.get("/login/").content.decode()
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/", {"code": "x", "state": "y"}).status_code == 404


def test_sso_sessions_end_when_sso_is_turned_off(sso, live_server, acme, settings):
    browser, _ = sign_in_through_provider(live_server.url)
    assert browser.get(f"{live_server.url}/pipelines/", timeout=10).url.endswith("/pipelines/")

    settings.OIDC_RP_CLIENT_ID = ""

    assert "/login/" in browser.get(f"{live_server.url}/pipelines/", timeout=10).url


def test_claim_values_map_to_organization_roles(settings):
    from accounts.oidc import wanted_memberships

    settings.FIREFLY_OIDC_ORGANIZATION_PREFIX = "idp/firefly/"
    assert wanted_memberships(
        [
            "idp/firefly/acme:member",
            "idp/firefly/acme:admin",
            "idp/firefly/beta",
            "idp/firefly/gamma:owner",
            "idp/firefly/:admin",
            "firefly:delta:admin",
            "reviewers",
        ]
    ) == {"acme": "admin", "beta": "member"}
