"""Fixtures for inbound hook tests: a pipeline with an input schema, a hook on it, and
senders that sign deliveries as an integrator's system would."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from inbound import services as inbound
from inbound import signatures
from inbound.models import InboundDelivery, InboundHook
from pipelines import services
from pipelines.models import Run

PAYMENT = {
    "name": "payment",
    "description": "a payment requested by the payments system, approved, then paid",
    "input_schema": {
        "type": "object",
        "required": ["amount", "payee"],
        "properties": {
            "amount": {"type": "number", "exclusiveMinimum": 0},
            "payee": {"type": "string", "minLength": 1},
            "reference": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "steps": [
        {"name": "check", "type": "noop"},
        {"name": "pay", "type": "noop", "after": ["check"]},
    ],
}

MAPPING = {
    "amount": "data.amount",
    "payee": "data.payee.name",
    "reference": "data.ref",
}


def payment_body(amount: Any = 120.5, payee: str = "ACME", ref: str = "inv-1", **extra: Any):
    body = {"event": "payment.requested", "data": {"amount": amount, "payee": {"name": payee}}}
    if ref:
        body["data"]["ref"] = ref
    body.update(extra)
    return json.dumps(body).encode()


@pytest.fixture
def payment(db: Any) -> str:
    services.pipeline_create(spec=PAYMENT)
    return "payment"


@pytest.fixture
def make_hook(payment: str) -> Callable[..., InboundHook]:
    def make(**fields: Any) -> InboundHook:
        fields.setdefault("name", "payments")
        fields.setdefault("input_mapping", MAPPING)
        fields.setdefault("delivery_id_header", "X-Delivery")
        fields.setdefault("pipeline", payment)
        return inbound.hook_create(**fields)

    return make


@pytest.fixture
def hook(make_hook: Callable[..., InboundHook]) -> InboundHook:
    return make_hook()


class Sender:
    """Posts to a hook as another system would: raw body, signature headers."""

    def __init__(self, hook: InboundHook, secret: str, client: Client | None = None) -> None:
        self.hook = hook
        self.secret = secret
        self.client = client or Client()

    def headers(self, body: bytes, delivery: str | None, **extra: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.hook.signature_format == InboundHook.Format.FIREFLY:
            stamp = int(extra.pop("timestamp", time.time()))
            headers["Firefly-Timestamp"] = str(stamp)
            headers["Firefly-Signature"] = signatures.sign_firefly(self.secret, stamp, body)
        else:
            headers[self.hook.signature_header] = signatures.sign_hmac(self.secret, body)
        if delivery is not None:
            headers["X-Delivery"] = delivery
        headers.update(extra)
        return headers

    def post(
        self,
        body: bytes | None = None,
        delivery: str | None = "d-1",
        headers: dict[str, str] | None = None,
        token: str | None = None,
        **extra: str,
    ) -> Any:
        body = payment_body() if body is None else body
        sent = self.headers(body, delivery, **extra) if headers is None else headers
        path = f"/hooks/{token or self.hook.token}/"
        return self.client.post(path, data=body, content_type="application/json", headers=sent)


@pytest.fixture
def sender(hook: InboundHook) -> Sender:
    return Sender(hook, hook.new_secret)


def runs() -> int:
    return Run.objects.count()


def refused(hook: InboundHook) -> list[tuple[int, str]]:
    rows = InboundDelivery.objects.filter(hook=hook, outcome="refused").order_by("pk")
    return [(row.http_status, row.reason) for row in rows]
