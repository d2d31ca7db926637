"""Specs naming code that is not an allowed module's own function are refused at load."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command  # noqa: F401 (the bait of an attack below)
from rest_framework.test import APIClient

from pipelines import registry
from pipelines.models import Pipeline, SecurityEvent
from tests.api.conftest import error_of
from tokens.services import token_create

pytestmark = pytest.mark.django_db

ATTACKS = [
    # A module an allowed module imported, and a function of it.
    ("pipelines.demo.steps.hashlib.sha256", "reaches into 'hashlib', a module"),
    ("tests.pipelines.callables.time.sleep", "reaches into 'time', a module"),
    ("tests.conftest.services.run_start", "reaches into 'services', a module"),
    # A function imported into an allowed module from elsewhere.
    (f"{__name__}.call_command", "django.core.management.call_command, imported into"),
    # Classes and other objects that are callable but not functions.
    ("tests.pipelines.callables.StepContext", "is a class, not a function"),
    ("tests.pipelines.callables.Pause", "is a class, not a function"),
    ("pipelines.demo.steps", "is a module, not a function"),
    # Dunders and private names, whatever they would resolve to.
    ("pipelines.demo.steps.__builtins__", "'__builtins__': private and dunder"),
    ("pipelines.demo.__import__", "'__import__': private and dunder"),
    ("tests.workers._private", "'_private': private and dunder"),
    # Outside the allowed modules altogether, or not a dotted path.
    ("os.system", "outside the allowed modules"),
    ("builtins.eval", "outside the allowed modules"),
    ("pipelines.demo.steps.build()", "not a dotted path"),
]


def api(user: Any) -> APIClient:
    client = APIClient()
    _, key = token_create(user=user, name="tests")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.mark.parametrize(("target", "reason"), ATTACKS)
def test_a_python_step_naming_it_is_refused(users, target, reason):
    spec = {
        "name": "attack",
        "steps": [{"name": "pwn", "type": "python", "config": {"callable": target}}],
    }

    response = api(users["boss"]).post("/api/v1/pipelines/", {"spec": spec}, format="json")

    error = error_of(response, 400, "invalid_spec")
    assert error["details"][0]["step"] == "pwn"
    assert error["details"][0]["field"] == "config"
    assert reason in error["message"]
    assert not Pipeline.objects.exists()
    event = SecurityEvent.objects.get(event="spec.refused")
    assert event.actor == users["boss"]
    assert reason in event.reason


@pytest.mark.parametrize(("target", "reason"), ATTACKS[:6])
def test_an_on_finish_naming_it_is_refused(users, target, reason):
    spec = {"name": "attack", "on_finish": target, "steps": [{"name": "a", "type": "noop"}]}

    response = api(users["boss"]).post("/api/v1/pipelines/", {"spec": spec}, format="json")

    error = error_of(response, 400, "invalid_spec")
    assert error["details"][0]["field"] == "on_finish"
    assert reason in error["message"]
    assert not Pipeline.objects.exists()


def test_the_refusal_holds_when_the_step_runs_too(settings):
    # A spec is checked at load; the handler resolves its callable again when it runs.
    with pytest.raises(ValueError, match="is a class"):
        registry.resolve_callable("tests.pipelines.callables.StepContext")
    settings.FIREFLY_CALLABLE_MODULES = ["pipelines.demo"]
    with pytest.raises(ValueError, match="outside the allowed modules"):
        registry.resolve_callable("tests.pipelines.callables.echo")


def test_an_allowed_modules_own_function_is_accepted(users):
    spec = {
        "name": "fine",
        "on_finish": "tests.pipelines.callables.echo",
        "steps": [
            {"name": "a", "type": "python", "config": {"callable": "pipelines.demo.steps.build"}}
        ],
    }

    response = api(users["boss"]).post("/api/v1/pipelines/", {"spec": spec}, format="json")

    assert response.status_code == 201, response.content
    assert Pipeline.objects.filter(name="fine").exists()
