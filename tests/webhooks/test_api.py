"""The webhooks REST API: staff only, the secret shown once, bad bodies a 400."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from tests.webhooks.conftest import stored_secret
from webhooks.models import Webhook

pytestmark = pytest.mark.django_db


def test_the_api_is_for_staff_only(hook_settings, users):
    client = APIClient()
    body = {"url": "http://127.0.0.1:9/hook", "events": ["run.finished"]}
    assert client.post("/api/v1/webhooks/", body, format="json").status_code in (401, 403)
    client.force_authenticate(users["r1"])
    assert client.post("/api/v1/webhooks/", body, format="json").status_code == 403
    assert client.get("/api/v1/webhooks/").status_code == 403
    assert not Webhook.objects.exists()


def test_staff_create_a_webhook_and_see_its_secret_once(hook_settings, users):
    client = APIClient()
    client.force_authenticate(users["boss"])
    body = {"url": "http://127.0.0.1:9/hook", "events": ["run.finished", "task.opened"]}

    created = client.post("/api/v1/webhooks/", body, format="json")

    assert created.status_code == 201, created.content
    hook = Webhook.objects.get()
    assert created.json()["secret"] == stored_secret(hook)
    assert created.json()["created_by"] == "boss"
    assert hook.events == ["run.finished", "task.opened"]
    listed = client.get("/api/v1/webhooks/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [row["id"] for row in rows] == [hook.pk]
    assert "secret" not in rows[0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://10.0.0.1/hook", "events": ["run.finished"]}, "url"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["run.exploded"]}, "events"),
        ({"url": "http://127.0.0.1:9/hook", "events": []}, "events"),
        ({"url": "not a url", "events": ["run.finished"]}, "url"),
    ],
)
def test_bad_webhooks_are_a_400(hook_settings, users, body, field):
    client = APIClient()
    client.force_authenticate(users["boss"])
    response = client.post("/api/v1/webhooks/", body, format="json")
    assert response.status_code == 400
    assert field in json.dumps(response.json())
    assert not Webhook.objects.exists()
