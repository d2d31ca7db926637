"""API tokens as an attacker meets them: hashed at rest, expired, revoked, guessed, stolen."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from io import StringIO
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from orgs.models import Organization
from pipelines.errors import PermissionDenied
from pipelines.models import SecurityEvent
from tests.api.conftest import error_of
from tokens import services
from tokens.models import ApiToken

pytestmark = pytest.mark.django_db


def api(key: str | None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def refused_401(response: Any) -> None:
    error_of(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Token"


def test_the_database_holds_no_usable_token(users):
    token, key = services.token_create(user=users["starter"], name="ci")
    secret = key.split("_", 2)[2]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM tokens_apitoken WHERE id = %s", [token.pk])
        row = " ".join(str(value) for value in cursor.fetchone())
    assert key not in row
    assert secret not in row
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    # What the row holds does not authenticate.
    refused_401(api(token.secret_hash).get("/api/v1/runs/"))
    refused_401(api(f"ffy_{token.prefix}_{token.secret_hash}").get("/api/v1/runs/"))
    assert api(key).get("/api/v1/runs/").status_code == 200


def test_a_guessed_secret_with_a_valid_prefix_is_refused(users):
    token, key = services.token_create(user=users["starter"], name="ci")
    guess = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert guess.startswith(f"ffy_{token.prefix}_")
    refused_401(api(guess).get("/api/v1/runs/"))
    refused_401(api(f"ffy_{token.prefix}_").get("/api/v1/runs/"))
    refused_401(api("ffy_000000000000_nope").get("/api/v1/runs/"))
    token.refresh_from_db()
    assert token.last_used_at is None


def test_an_expired_token_is_refused(users):
    token, key = services.token_create(
        user=users["starter"], name="ci", expires_in=timedelta(days=1)
    )
    assert api(key).get("/api/v1/runs/").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    refused_401(api(key).get("/api/v1/runs/"))


def test_tokens_expire_by_default_and_never_only_when_asked(users, settings):
    settings.FIREFLY_TOKEN_TTL_DAYS = 90
    token, _ = services.token_create(user=users["starter"], name="ci")
    assert token.expires_at is not None
    assert abs(token.expires_at - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)
    forever, _ = services.token_create(user=users["starter"], name="ci", never_expires=True)
    assert forever.expires_at is None


def test_a_revoked_token_is_refused(users):
    token, key = services.token_create(user=users["starter"], name="ci")
    response = api(key).post(f"/api/v1/tokens/{token.pk}/revoke/")
    assert response.status_code == 200, response.content
    assert response.json()["revoked_by"] == "starter"
    refused_401(api(key).get("/api/v1/runs/"))


def test_another_user_cannot_revoke_your_token_and_an_admin_can(users):
    token, key = services.token_create(user=users["starter"], name="ci")
    _, outsider = services.token_create(user=users["outsider"], name="mine")
    response = api(outsider).post(f"/api/v1/tokens/{token.pk}/revoke/")
    # Not told it exists: a 404, with the attempt recorded.
    error_of(response, 404, "not_found")
    event = SecurityEvent.objects.get(event="token.refused")
    assert event.actor == users["outsider"]
    assert event.organization_id == token.organization_id
    assert event.data == {"token": token.pk, "owner": users["starter"].pk}
    token.refresh_from_db()
    assert token.revoked_at is None
    assert api(key).get("/api/v1/runs/").status_code == 200
    # Nor can they see it.
    listed = api(outsider).get("/api/v1/tokens/").json()["results"]
    assert [row["name"] for row in listed] == ["mine"]

    _, boss = services.token_create(user=users["boss"], name="ops")
    assert {row["id"] for row in api(boss).get("/api/v1/tokens/").json()["results"]} >= {token.pk}
    response = api(boss).post(f"/api/v1/tokens/{token.pk}/revoke/")
    assert response.status_code == 200, response.content
    token.refresh_from_db()
    assert token.revoked_by == users["boss"]
    refused_401(api(key).get("/api/v1/runs/"))


def test_last_used_moves_when_the_token_is_used_at_most_once_a_minute(users):
    token, key = services.token_create(user=users["starter"], name="ci")
    assert token.last_used_at is None
    assert api(key).get("/api/v1/runs/").status_code == 200
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    assert api(key).get("/api/v1/runs/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == first
    earlier = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=earlier)
    assert api(key).get("/api/v1/runs/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at > earlier


def test_the_api_shows_a_new_token_once_and_never_again(users):
    client = APIClient()
    client.force_authenticate(users["starter"])
    response = client.post("/api/v1/tokens/", {"name": "deploys"}, format="json")
    assert response.status_code == 201, response.content
    key = response.json()["token"]
    assert api(key).get("/api/v1/runs/").status_code == 200
    listed = client.get("/api/v1/tokens/").content.decode()
    assert key not in listed
    assert key.split("_", 2)[2] not in listed
    assert "secret_hash" not in listed


def test_the_admin_never_shows_a_secret_and_revokes(users):
    token, key = services.token_create(user=users["starter"], name="ci")
    admin = User.objects.create_superuser("root", "root@example.com", "x")
    client = APIClient()
    client.force_login(admin)
    page = client.get("/admin/tokens/apitoken/").content.decode()
    assert token.prefix in page
    detail = client.get(f"/admin/tokens/apitoken/{token.pk}/change/").content.decode()
    for shown in (page, detail):
        assert token.secret_hash not in shown
        assert key.split("_", 2)[2] not in shown
    response = client.post(
        "/admin/tokens/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_by == admin
    refused_401(api(key).get("/api/v1/runs/"))


def test_create_token_prints_the_key_once(users):
    out = StringIO()
    call_command(
        "create_token", "starter", "--name", "ci", "--days", "7", stdout=out, stderr=StringIO()
    )
    key = out.getvalue().strip()
    token = ApiToken.objects.get(user=users["starter"], name="ci")
    assert timedelta(days=6) < token.expires_at - timezone.now() <= timedelta(days=7)
    assert api(key).get("/api/v1/runs/").status_code == 200


def test_keys_of_the_old_drf_tokens_keep_working_and_leave_the_database(users):
    """The data migration hashes rest_framework.authtoken's plaintext keys, then deletes them."""
    migration = import_module("tokens.migrations.0002_carry_over_authtoken_keys")
    old = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamptz,"
            " user_id integer)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, now(), %s)", [old, users["starter"].pk]
        )
    with connection.schema_editor() as editor:
        migration.carry_over(apps, editor)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone() == (0,)
    token = ApiToken.objects.get(name="migrated")
    assert token.user == users["starter"]
    assert token.expires_at is not None
    assert api(old).get("/api/v1/runs/").status_code == 200
    refused_401(api(old[:-1] + "8").get("/api/v1/runs/"))


def test_a_token_for_an_organization_its_user_is_not_in_is_refused_and_recorded(users):
    other = Organization.objects.create(slug="other", name="Other")
    with pytest.raises(PermissionDenied):
        services.token_create(user=users["starter"], name="sneaky", organization=other)
    assert not ApiToken.objects.filter(name="sneaky").exists()
    event = SecurityEvent.objects.get(event="token.refused")
    assert (event.actor, event.organization) == (users["starter"], other)
