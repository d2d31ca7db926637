"""Outbound webhooks delivered to a real HTTP server on 127.0.0.1: signing, retries, limits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from approvals import services
from approvals.models import HumanTask
from pipelines import services as pipelines
from pipelines.models import Run
from tests.approvals.conftest import drive
from tests.conftest import wait_finished, wait_for
from tests.webhooks.conftest import Receiver, approve_and_finish, gated_run, verify
from webhooks import services as webhooks
from webhooks.admin import WebhookForm
from webhooks.models import Webhook, WebhookDelivery, validate_webhook_url
from webhooks.tasks import deliver_webhook

pytestmark = pytest.mark.django_db


def test_a_task_event_is_delivered_signed(hook_settings, receive, users, offline):
    receiver = receive([200])
    hook = webhooks.webhook_create(url=receiver.url, events=["task.opened"], actor=users["boss"])
    assert len(hook.new_secret) >= 32

    run = gated_run(users, offline)
    [delivery_id] = offline.queued
    deliver_webhook.apply(args=(delivery_id,))

    [request] = receiver.received
    assert verify(hook.new_secret, request["headers"], request["body"])
    assert not verify("another-secret", request["headers"], request["body"])
    body = json.loads(request["body"])
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert body["id"] == str(delivery.event_id)
    assert body["type"] == "task.opened"
    assert body["data"]["run"] == run.pk
    assert body["data"]["step"] == "review"
    assert body["data"]["assignee_role"] == "reviewers"
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert (delivery.attempts, delivery.response_code) == (1, 200)
    assert delivery.latency_ms is not None
    assert delivery.delivered_at is not None


def test_a_500_is_retried_and_the_log_shows_both_attempts(hook_settings, receive, users, offline):
    receiver = receive([500, 200])
    webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    gated_run(users, offline)
    [delivery_id] = offline.queued

    # apply() runs the task's retries in this process, without the countdown.
    deliver_webhook.apply(args=(delivery_id,))

    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert (delivery.attempts, delivery.response_code) == (2, 200)
    first, second = (json.loads(r["body"]) for r in receiver.received)
    assert first["id"] == second["id"] == str(delivery.event_id)


def test_retries_stop_after_the_last_attempt(hook_settings, receive, users, offline):
    hook_settings.FIREFLY_WEBHOOK_MAX_ATTEMPTS = 3
    receiver = receive([503])
    webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    gated_run(users, offline)
    [delivery_id] = offline.queued

    deliver_webhook.apply(args=(delivery_id,))

    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert len(receiver.received) == 3
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert (delivery.attempts, delivery.response_code, delivery.last_error) == (3, 503, "HTTP 503")


def test_a_4xx_is_not_retried(hook_settings, receive, users, offline):
    receiver = receive([404])
    webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    gated_run(users, offline)
    deliver_webhook.apply(args=(offline.queued[0],))
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 1, 404)


def test_the_backoff_doubles(hook_settings):
    hook_settings.FIREFLY_WEBHOOK_BACKOFF_S = 10
    assert [webhooks.backoff(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert webhooks.backoff(30) == webhooks.MAX_BACKOFF_S


def test_a_hanging_receiver_times_out_and_the_run_does_not_wait(
    hook_settings, receive, users, offline
):
    receiver = receive([200], delay=3)
    webhooks.webhook_create(url=receiver.url, events=["run.finished", "task.opened"])
    run = gated_run(users, offline)
    run = approve_and_finish(run, users, offline)

    # The run is done; its deliveries are only queued.
    assert run.status == Run.Status.SUCCEEDED
    assert len(offline.queued) == 2
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {("pending", 0)}

    finished = WebhookDelivery.objects.get(event="run.finished")
    assert finished.payload["status"] == "succeeded"
    started = time.monotonic()
    countdown = webhooks.delivery_attempt(delivery_id=finished.pk)
    assert time.monotonic() - started < 2
    finished.refresh_from_db()
    assert finished.status == WebhookDelivery.Status.PENDING  # to be retried
    assert finished.attempts == 1
    assert "Timeout" in finished.last_error
    assert countdown == webhooks.backoff(1)


def test_a_failed_run_sends_run_failed(hook_settings, receive, users, offline):
    receiver = receive([200])
    webhooks.webhook_create(url=receiver.url, events=["run.failed"])
    pipelines.pipeline_create(
        member_role="starter",
        spec={"name": "broken", "steps": [{"name": "f", "type": "fail", "config": {}}]},
    )
    with offline():
        run = drive(pipelines.run_start(pipeline="broken", inputs={}))
    assert run.status == Run.Status.FAILED
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event, delivery.payload["run"]) == ("run.failed", run.pk)
    deliver_webhook.apply(args=(delivery.pk,))
    assert json.loads(receiver.received[0]["body"])["data"]["status"] == "failed"


def test_webhooks_get_only_the_events_they_subscribe_to(hook_settings, receive, users, offline):
    url = receive().url
    runs_only = webhooks.webhook_create(url=url, events=["run.finished"])
    tasks_only = webhooks.webhook_create(url=url, events=["task.opened", "task.decided"])
    inactive = webhooks.webhook_create(url=url, events=["task.opened"], active=False)

    run = gated_run(users, offline)
    assert list(runs_only.deliveries.values_list("event", flat=True)) == []
    assert list(tasks_only.deliveries.values_list("event", flat=True)) == ["task.opened"]

    approve_and_finish(run, users, offline)
    assert list(runs_only.deliveries.values_list("event", flat=True)) == ["run.finished"]
    assert sorted(tasks_only.deliveries.values_list("event", flat=True)) == [
        "task.decided",
        "task.opened",
    ]
    assert not inactive.deliveries.exists()


def test_deadlines_send_task_expired_and_escalated(hook_settings, receive, users, offline):
    hook = webhooks.webhook_create(
        url=receive().url, events=["task.expired", "task.escalated", "run.finished"]
    )
    users["boss"].groups.create(name="managers")
    expiring = gated_run(users, offline, "expiring", timeout_hours=1)
    escalating = gated_run(
        users, offline, "escalating", timeout_hours=1, on_timeout="escalate:managers"
    )
    HumanTask.objects.update(due_at=timezone.now() - timedelta(minutes=1))

    with offline():
        services.expire_overdue()

    sent = {(d.event, d.payload.get("run")): d.payload for d in hook.deliveries.all()}
    assert sent[("task.expired", expiring.pk)]["status"] == "expired"
    assert sent[("task.escalated", escalating.pk)]["assignee_role"] == "managers"
    assert sent[("run.finished", expiring.pk)]["status"] == "rejected"
    assert len(sent) == 3


def test_hosts_off_the_allow_list_are_refused_at_creation(hook_settings):
    with pytest.raises(ValidationError, match="not in FIREFLY_WEBHOOK_ALLOWED_HOSTS"):
        webhooks.webhook_create(url="http://169.254.169.254/latest", events=["run.finished"])
    with pytest.raises(ValidationError, match="http"):
        validate_webhook_url("file:///etc/passwd")
    form = WebhookForm(data={"url": "http://internal.example/", "events": ["run.finished"]})
    assert not form.is_valid()
    assert "FIREFLY_WEBHOOK_ALLOWED_HOSTS" in str(form.errors["url"])
    assert not Webhook.objects.exists()


def test_the_allow_list_is_checked_again_at_delivery(hook_settings, receive, users, offline):
    receiver = receive([200])
    webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    gated_run(users, offline)
    hook_settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS = []

    deliver_webhook.apply(args=(offline.queued[0],))

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert "not in FIREFLY_WEBHOOK_ALLOWED_HOSTS" in delivery.last_error
    assert receiver.received == []


def test_a_delivered_event_is_not_sent_again(hook_settings, receive, users, offline):
    receiver = receive([200])
    webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    gated_run(users, offline)
    deliver_webhook.apply(args=(offline.queued[0],))
    deliver_webhook.apply(args=(offline.queued[0],))  # a redelivered message
    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.get().attempts == 1


def test_the_sweep_sends_again_a_delivery_whose_message_was_lost(
    hook_settings, receive, users, offline
):
    receiver = receive([503, 200])
    webhooks.webhook_create(url=receiver.url, events=["task.opened"])
    gated_run(users, offline)
    [delivery_id] = offline.queued  # this message never reaches a worker
    assert webhooks.deliveries_sweep() == 0  # not overdue yet

    def overdue(delivery_id: int) -> None:  # FIREFLY_REQUEUE_AFTER_S (120 s) went by
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            next_attempt_at=timezone.now() - timedelta(seconds=121)
        )

    overdue(delivery_id)
    assert webhooks.deliveries_sweep() == 1
    assert offline.queued == [delivery_id, delivery_id]
    assert webhooks.deliveries_sweep() == 0  # once per overdue time, not every pass

    # The resent message's attempt fails: its retry is due after the backoff, so the
    # sweep leaves it alone until that message is overdue too.
    assert webhooks.delivery_attempt(delivery_id=delivery_id) == webhooks.backoff(1)
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.next_attempt_at > timezone.now()
    assert webhooks.deliveries_sweep() == 0

    overdue(delivery_id)
    assert webhooks.deliveries_sweep() == 1
    assert offline.attempts == [1, 1, 2]  # the sweep's message names the next attempt
    assert webhooks.delivery_attempt(delivery_id=delivery_id, attempt=1) is None  # a stale copy
    assert webhooks.delivery_attempt(delivery_id=delivery_id, attempt=2) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 2)
    assert webhooks.deliveries_sweep() == 0  # delivered: never again
    assert len(receiver.received) == 2


# --- end to end -----------------------------------------------------------------------


@pytest.fixture
def hanging(hook_settings: Any, receive: Any) -> Any:
    return receive([200], delay=8)


@pytest.fixture
def hook_worker(worker: Any, hanging: Receiver) -> Iterator[Any]:
    """The session worker, restarted with the webhook settings (it reads them at start)."""
    original = dict(worker.env)
    worker.stop()
    worker.env = {
        **original,
        "FIREFLY_WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{hanging.server.server_address[1]}",
        "FIREFLY_OUTBOUND_ALLOWED_ADDRESSES": "127.0.0.1",
        "FIREFLY_WEBHOOK_TIMEOUT_S": "1",
        "FIREFLY_WEBHOOK_BACKOFF_S": "600",
    }
    worker.start()
    yield worker
    worker.stop()
    worker.env = original
    worker.start()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_dead_endpoint_never_slows_a_real_run(hook_settings, hanging, hook_worker):
    webhooks.webhook_create(url=hanging.url, events=["run.finished"])
    pipelines.pipeline_create(
        member_role="starter",
        spec={
            "name": "quick",
            "steps": [{"name": "a", "type": "noop"}, {"name": "b", "type": "noop", "after": ["a"]}],
        },
    )

    started = time.monotonic()
    run = wait_finished(pipelines.run_start(pipeline="quick", inputs={}))
    assert run.status == Run.Status.SUCCEEDED
    assert time.monotonic() - started < 5

    delivery = wait_for(
        lambda: WebhookDelivery.objects.filter(attempts=1, last_error__contains="Timeout").first(),
        timeout=10,
        message="the first attempt to time out",
    )
    assert delivery.status == WebhookDelivery.Status.PENDING  # a retry is scheduled
    assert delivery.payload["status"] == "succeeded"
    assert len(hanging.received) == 1
