"""Password guessing: failed logins lock a username and an address out, and are recorded."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db.models import F
from django.test import Client

from pipelines.models import SecurityEvent

RIGHT = "correct horse battery staple"
ATTACKER = "203.0.113.7"
LOCKED = "Too many failed logins"


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password=RIGHT)


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", password=RIGHT)


def log_in(client: Client, username: str, password: str, address: str, url: str = "/login/"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def guess(client: Client, username: str, address: str, times: int, url: str = "/login/"):
    return [log_in(client, username, f"guess-{n}", address, url).status_code for n in range(times)]


@pytest.mark.django_db
def test_the_sixth_login_is_refused_even_with_the_right_password(client, alice):
    # Four wrong guesses are plain failures; the fifth locks the account.
    assert guess(client, "alice", ATTACKER, 5) == [200, 200, 200, 200, 429]

    response = log_in(client, "alice", RIGHT, ATTACKER)

    assert response.status_code == 429
    assert LOCKED in response.content.decode()
    assert "locked for 15 minutes" in response.content.decode()
    assert not logged_in(client)
    assert client.get("/").status_code == 302  # back to the login page
    event = SecurityEvent.objects.filter(event="login.locked_out").latest("id")
    assert event.actor_name == "alice"
    assert event.actor is None
    assert event.address == ATTACKER
    assert event.data["path"] == "/login/"
    # The failures are kept, their passwords are not.
    assert AccessAttempt.objects.filter(username="alice").exists()
    assert not AccessAttempt.objects.filter(post_data__contains="guess-").exists()
    assert not AccessAttempt.objects.filter(post_data__contains=RIGHT).exists()


@pytest.mark.django_db
def test_a_locked_username_is_locked_from_every_address(client, alice):
    guess(client, "alice", ATTACKER, 5)

    response = log_in(Client(), "alice", RIGHT, "198.51.100.20")

    assert response.status_code == 429
    assert LOCKED in response.content.decode()


@pytest.mark.django_db
def test_a_locked_address_is_locked_for_every_username(client, alice, bob):
    for n in range(5):
        log_in(client, f"someone-{n}", "guess", ATTACKER)

    other = Client()
    response = log_in(other, "bob", RIGHT, ATTACKER)

    assert response.status_code == 429
    assert not logged_in(other)


@pytest.mark.django_db
def test_another_username_from_another_address_is_not_locked(client, alice, bob):
    guess(client, "alice", ATTACKER, 6)

    other = Client()
    response = log_in(other, "bob", RIGHT, "198.51.100.20")

    assert response.status_code == 302
    assert logged_in(other)


@pytest.mark.django_db
def test_the_lockout_ends_after_the_cool_off(client, alice):
    guess(client, "alice", ATTACKER, 5)
    assert log_in(client, "alice", RIGHT, ATTACKER).status_code == 429

    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=16))

    assert log_in(client, "alice", RIGHT, ATTACKER).status_code == 302
    assert logged_in(client)


@pytest.mark.django_db
def test_the_admin_login_is_locked_out_too(client, django_user_model):
    django_user_model.objects.create_user("operator", password=RIGHT, is_staff=True)
    url = "/admin/login/?next=/admin/"
    guess(client, "operator", ATTACKER, 5, url)

    response = log_in(client, "operator", RIGHT, ATTACKER, url)

    assert response.status_code == 429
    assert LOCKED in response.content.decode()
    assert not logged_in(client)
    assert SecurityEvent.objects.filter(event="login.locked_out", actor_name="operator").exists()


@pytest.mark.django_db
def test_the_api_takes_no_passwords(client, alice):
    """Tokens and sessions only: the API is no way around the login lockout."""
    response = client.get(
        "/api/v1/runs/", HTTP_AUTHORIZATION="Basic YWxpY2U6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ=="
    )
    assert response.status_code == 401


@pytest.mark.parametrize("password", ["password", "12345678", "123456789012"])
@pytest.mark.django_db
def test_common_short_and_numeric_passwords_are_refused(alice, password):
    with pytest.raises(ValidationError):
        validate_password(password, user=alice)


@pytest.mark.django_db
def test_the_username_as_password_is_refused(django_user_model):
    # Long enough for the length rule: only the similarity rule refuses it.
    user = django_user_model.objects.create_user("margaret.hamilton", password=RIGHT)
    with pytest.raises(ValidationError, match="too similar to the username"):
        validate_password("margaret.hamilton", user=user)


@pytest.mark.django_db
def test_a_strong_password_is_accepted(alice):
    validate_password("mauve-otter-tunes-a-cello", user=alice)
