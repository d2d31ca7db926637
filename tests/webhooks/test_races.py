"""A delivery racing its own redelivery (a duplicated broker message) on real connections."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import wait_for
from tests.races import in_thread, race
from tests.webhooks.conftest import Receiver
from webhooks import services as webhooks
from webhooks.models import WebhookDelivery


@pytest.fixture
def delivery(transactional_db: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A pending delivery to a receiver on 127.0.0.1 whose message the test sends itself."""
    monkeypatch.setattr(webhooks, "enqueue", lambda delivery_id: None)

    def make(receiver: Receiver) -> int:
        webhooks.webhook_create(url=receiver.url, events=["run.finished"])
        [delivery_id] = webhooks.deliveries_create(
            event="run.finished", data={"organization": "default", "run": 1}
        )
        return delivery_id

    return make


def delivered_once(receiver: Receiver, delivery_id: int) -> None:
    assert len(receiver.received) == 1
    row = WebhookDelivery.objects.get(pk=delivery_id)
    assert (row.status, row.attempts, row.response_code) == ("delivered", 1, 200)


@pytest.mark.parametrize("attempt", range(3))
def test_a_delivery_racing_its_redelivery_reaches_the_receiver_once(
    hook_settings, receive, delivery, attempt
):
    receiver = receive([200])
    delivery_id = delivery(receiver)

    results = race(
        lambda: webhooks.delivery_attempt(delivery_id=delivery_id),
        lambda: webhooks.delivery_attempt(delivery_id=delivery_id),
    )

    assert results == [None, None]
    delivered_once(receiver, delivery_id)


def test_a_redelivery_while_the_attempt_is_in_flight_sends_nothing(
    hook_settings, receive, delivery
):
    receiver = receive([200], delay=0.3)
    delivery_id = delivery(receiver)

    first, result = in_thread(lambda: webhooks.delivery_attempt(delivery_id=delivery_id))
    wait_for(lambda: receiver.received, timeout=5, message="the first request to arrive")
    # The same message again, while the receiver still holds the first request.
    assert webhooks.delivery_attempt(delivery_id=delivery_id) is None
    first.join(timeout=5)

    assert result == [None]
    delivered_once(receiver, delivery_id)
