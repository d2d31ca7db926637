"""Behind the TLS proxy, login lockouts count against the client's address, not the proxy's."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from pipelines.models import SecurityEvent

RIGHT = "correct horse battery staple"
PROXY = "127.0.0.1"
GUESSER = "203.0.113.7"
SOMEONE_ELSE = "198.51.100.20"


def log_in(username: str, password: str, forwarded_for: str, remote: str = PROXY) -> Any:
    return Client().post(
        "/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=remote,
        HTTP_X_FORWARDED_FOR=forwarded_for,
    )


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password=RIGHT)


@pytest.mark.django_db
def test_one_guessing_client_behind_the_proxy_does_not_lock_everyone_out(settings, alice):
    settings.FIREFLY_TLS_PROXY = True
    for n in range(5):
        log_in(f"someone-{n}", "guess", GUESSER)

    assert log_in("alice", RIGHT, SOMEONE_ELSE).status_code == 302
    # The guesser stays locked, right password or not, whatever it puts in front of the
    # address the proxy wrote.
    assert log_in("alice", RIGHT, GUESSER).status_code == 429
    assert log_in("alice", RIGHT, f"{SOMEONE_ELSE}, {GUESSER}").status_code == 429
    event = SecurityEvent.objects.filter(event="login.locked_out").latest("id")
    assert event.address == GUESSER


@pytest.mark.django_db
def test_without_a_proxy_the_header_is_a_client_s_word_and_ignored(settings, alice):
    assert settings.FIREFLY_TLS_PROXY is False
    for n in range(5):
        log_in(f"someone-{n}", "guess", f"192.0.2.{n}", remote=GUESSER)

    assert log_in("alice", RIGHT, SOMEONE_ELSE, remote=GUESSER).status_code == 429
    assert log_in("alice", RIGHT, GUESSER, remote=SOMEONE_ELSE).status_code == 302
