"""The outbox: webhook events written with the change that caused them, relayed once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from orgs.models import Organization
from pipelines import events
from pipelines import services as pipelines
from pipelines.models import OutboxEvent, Run, StepRun
from tests.races import race
from tests.webhooks.conftest import gated_run
from tests.workers import ROOT, database_url
from webhooks import services as webhooks
from webhooks.models import WebhookDelivery

ONE_STEP = [{"name": "s", "type": "noop"}]


def pending_run(name: str = "boxed") -> Run:
    pipelines.pipeline_create(member_role="starter", spec={"name": name, "steps": ONE_STEP})
    return pipelines.run_start(pipeline=name, inputs={})


@pytest.mark.django_db
def test_the_event_is_written_with_the_change_and_rolled_back_with_it(hook_settings):
    webhooks.webhook_create(url="http://127.0.0.1:9/hook", events=["run.finished"])
    run = pending_run()

    written = []

    def cancel_then_fail() -> None:
        with transaction.atomic():
            pipelines.run_cancel(run_id=run.pk)
            written.append(OutboxEvent.objects.filter(event="run.finished").count())
            raise RuntimeError("the change fails after the event was written")

    with pytest.raises(RuntimeError):
        cancel_then_fail()
    assert written == [1]
    assert not OutboxEvent.objects.exists()

    pipelines.run_cancel(run_id=run.pk)
    row = OutboxEvent.objects.get()
    assert (row.event, row.payload["run"], row.payload["status"]) == (
        "run.finished",
        run.pk,
        "cancelled",
    )
    assert row.relayed_at is None


@pytest.mark.django_db
def test_events_no_webhook_wants_write_no_outbox_row(
    hook_settings, django_capture_on_commit_callbacks
):
    webhooks.webhook_create(url="http://127.0.0.1:9/hook", events=["task.opened"])
    with django_capture_on_commit_callbacks(execute=True):
        run = pending_run()
        pipelines.run_advance(run_id=run.pk)
        pipelines.step_execute(step_run_id=run.steps.get().pk)
    # step.* are no webhook events, and no webhook of the organization listens for
    # run.finished: the statement that would write its row finds no subscriber.
    assert not OutboxEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()


def finish_run(organization: Any = None, name: str = "boxed") -> tuple[Run, list[Any]]:
    """A run of `organization` started and cancelled (its run.finished event): the run,
    and the callbacks its cancel left for after commit."""
    pipelines.pipeline_create(
        member_role="starter", spec={"name": name, "steps": ONE_STEP}, organization=organization
    )
    run = pipelines.run_start(pipeline=name, inputs={}, organization=organization)
    with transaction.atomic():
        pipelines.run_cancel(run_id=run.pk)
        callbacks = [callback for _, callback, _ in transaction.get_connection().run_on_commit]
    return run, callbacks


def relays_asked(callbacks: list[Any]) -> int:
    return sum(getattr(c, "__name__", "") == "_send_relay" for c in callbacks)


@pytest.mark.django_db
def test_a_run_event_is_written_only_where_an_active_webhook_of_its_organization_listens(
    hook_settings,
):
    other = Organization.objects.create(name="Other", slug="other")
    # The other organization's webhook listens for run.finished: it must not make the
    # default organization's runs write (or leak) anything.
    webhooks.webhook_create(
        url="http://127.0.0.1:9/hook", events=["run.finished"], organization=other
    )
    mine = webhooks.webhook_create(url="http://127.0.0.1:9/hook", events=["task.opened"])

    _, callbacks = finish_run()
    assert not OutboxEvent.objects.exists()
    assert relays_asked(callbacks) == 0  # no row, no relay message

    # Subscribed now: the very next event is written, with no wait for any cache.
    webhooks.webhook_update(
        webhook_id=mine.pk, url=mine.url, events=["task.opened", "run.finished"], active=True
    )
    run, callbacks = finish_run(name="boxed-2")
    row = OutboxEvent.objects.get()
    assert (row.event, row.payload["run"], row.organization_id) == (
        "run.finished",
        run.pk,
        Organization.objects.default().pk,
    )
    assert relays_asked(callbacks) == 1

    # Switched off: nothing again.
    webhooks.webhook_update(
        webhook_id=mine.pk, url=mine.url, events=["task.opened", "run.finished"], active=False
    )
    finish_run(name="boxed-3")
    assert OutboxEvent.objects.count() == 1

    # The other organization's run is written for its own webhook, and relayed to it.
    run, callbacks = finish_run(other, name="theirs")
    assert OutboxEvent.objects.filter(organization=other, payload__run=run.pk).count() == 1
    assert relays_asked(callbacks) == 1


@pytest.mark.django_db
def test_relaying_twice_makes_each_delivery_once(hook_settings, monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr(
        webhooks, "enqueue", lambda delivery_id, attempt=1: queued.append(delivery_id)
    )
    hooks = [
        webhooks.webhook_create(url="http://127.0.0.1:9/hook", events=["run.finished"])
        for _ in range(2)
    ]
    pipelines.run_cancel(run_id=pending_run().pk)

    assert pipelines.outbox_relay() == 1
    assert pipelines.outbox_relay() == 0
    assert pipelines.outbox_sweep() == 0
    assert OutboxEvent.objects.get().relayed_at is not None
    deliveries = WebhookDelivery.objects.all()
    assert sorted(d.webhook_id for d in deliveries) == sorted(h.pk for h in hooks)
    assert len({d.event_id for d in deliveries}) == 2


@pytest.mark.django_db
def test_a_relay_that_fails_leaves_the_event_for_the_sweep(hook_settings, monkeypatch):
    webhooks.webhook_create(url="http://127.0.0.1:9/hook", events=["run.finished"])
    pipelines.run_cancel(run_id=pending_run().pk)

    def broken(*, event: str, data: dict[str, Any]) -> list[int]:
        WebhookDelivery.objects.all().delete()  # a half-done write, rolled back with the rest
        raise ConnectionError("the database went away")

    real = webhooks.deliveries_create
    monkeypatch.setattr(webhooks, "deliveries_create", broken)
    assert pipelines.outbox_relay() == 0
    row = OutboxEvent.objects.get()
    assert (row.relayed_at, row.attempts) == (None, 1)
    assert "the database went away" in row.last_error

    monkeypatch.setattr(webhooks, "deliveries_create", real)
    monkeypatch.setattr(webhooks, "enqueue", lambda delivery_id, attempt=1: None)
    hook_settings.FIREFLY_OUTBOX_RELAY_AFTER_S = 0
    assert pipelines.reap().relayed == 1
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.django_db
def test_task_events_are_written_in_the_deciding_transaction(hook_settings, users, offline):
    webhooks.webhook_create(url="http://127.0.0.1:9/hook", events=["task.opened"])
    run = gated_run(users, offline)  # offline relays in this process after commit
    row = OutboxEvent.objects.get(event="task.opened")
    assert row.payload["run"] == run.pk
    assert row.payload["step"] == "review"
    assert row.relayed_at is not None
    assert len(offline.queued) == 1


# A process that commits a run's change, then dies before anything is sent: the hook
# it registers first runs before the relay's, and kills the process with SIGKILL.
CRASH = """
import os, signal, sys
import django
django.setup()
from django.db import transaction
from django.utils import timezone
from pipelines import services
with transaction.atomic():
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    services.run_cancel(run_id=int(sys.argv[1]))
"""


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_by_a_killed_process_reaches_the_receiver_once(
    hook_settings, receive, monkeypatch
):
    receiver = receive([200])
    webhooks.webhook_create(url=receiver.url, events=["run.finished"])
    run = pending_run("crashing")

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "firefly_site.test_settings",
        "DATABASE_URL": database_url(),
        "PYTHONPATH": str(ROOT),
    }
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, str(run.pk)], cwd=ROOT, env=env, capture_output=True
    )
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED  # the change committed
    assert OutboxEvent.objects.filter(relayed_at__isnull=True).count() == 1  # and its event
    assert not WebhookDelivery.objects.exists()  # nothing was sent or even made

    # After restart, the reaper's sweep relays it; the delivery machinery sends it.
    queued: list[tuple[int, int]] = []
    monkeypatch.setattr(webhooks, "enqueue", lambda d, attempt=1: queued.append((d, attempt)))
    hook_settings.FIREFLY_OUTBOX_RELAY_AFTER_S = 0
    assert pipelines.reap().relayed == 1
    assert pipelines.outbox_sweep() == 0  # a second sweep finds nothing left
    [(delivery_id, attempt)] = queued
    assert webhooks.delivery_attempt(delivery_id=delivery_id, attempt=attempt) is None
    # A duplicate of the message, and another relay, send nothing more.
    assert webhooks.delivery_attempt(delivery_id=delivery_id, attempt=attempt) is None
    assert pipelines.outbox_relay() == 0

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    [request] = receiver.received
    assert request["headers"]["Firefly-Delivery"] == str(delivery.event_id)
    body = json.loads(request["body"])
    assert (body["id"], body["type"]) == (str(delivery.event_id), "run.finished")
    assert (body["data"]["run"], body["data"]["status"]) == (run.pk, "cancelled")


def test_only_durable_hooks_are_relayed_and_their_errors_propagate():
    got: list[str] = []

    def durable(event: str, payload: dict[str, Any]) -> None:
        got.append(f"durable:{event}")
        raise ValueError("retry me")

    hooks = [
        events.register(durable, events=["run.failed"], durable=True),
        events.register(lambda event, payload: got.append(f"plain:{event}"), events=["run.failed"]),
    ]
    try:
        events.emit("run.failed", {"run": 1})
        with pytest.raises(ValueError, match="retry me"):
            events.relay("run.failed", {"run": 1})
        assert events.durable_wanted("run.failed", {})
        assert not events.durable_wanted("step.started", {})
    finally:
        for hook in hooks:
            events.unregister(hook)
    assert got == ["plain:run.failed", "durable:run.failed"]


# --- what the README promises of sending ----------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def one_delivery(
    hook_settings: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> Any:
    """make(url) -> the id of a pending delivery of run.finished to a new webhook at url."""

    def make(url: str, **extra: Any) -> int:
        queued: list[int] = []
        monkeypatch.setattr(webhooks, "enqueue", lambda d, attempt=1: queued.append(d))
        hook = webhooks.webhook_create(url=url, events=["run.finished"], **extra)
        pipelines.run_cancel(run_id=pending_run(f"sent-{hook.pk}").pk)
        with django_capture_on_commit_callbacks(execute=True):
            pipelines.outbox_relay()
        [delivery_id] = queued
        return delivery_id

    return make


@pytest.mark.django_db
def test_a_redirect_is_not_followed(one_delivery, receive):
    target = receive([200])
    redirector = receive([302], location=target.url)
    delivery_id = one_delivery(redirector.url)

    assert webhooks.delivery_attempt(delivery_id=delivery_id) is None
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert len(redirector.received) == 1
    assert target.received == []
    assert (delivery.status, delivery.response_code) == ("failed", 302)


@pytest.mark.django_db
def test_a_429_is_retried(one_delivery, receive):
    receiver = receive([429, 200])
    delivery_id = one_delivery(receiver.url)

    assert webhooks.delivery_attempt(delivery_id=delivery_id, attempt=1) is not None
    assert WebhookDelivery.objects.get(pk=delivery_id).status == "pending"
    assert webhooks.delivery_attempt(delivery_id=delivery_id, attempt=2) is None
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 2, 200)
    first, second = (json.loads(r["body"])["id"] for r in receiver.received)
    assert first == second == str(delivery.event_id)


@pytest.mark.django_db
def test_a_refused_connection_is_retried(one_delivery, receive, hook_settings):
    port = free_port()  # nothing listens there yet
    hook_settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS = [
        *hook_settings.FIREFLY_WEBHOOK_ALLOWED_HOSTS,
        f"127.0.0.1:{port}",
    ]
    delivery_id = one_delivery(f"http://127.0.0.1:{port}/hook")

    assert webhooks.delivery_attempt(delivery_id=delivery_id, attempt=1) is not None
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.status == "pending"
    assert "ConnectionError" in delivery.last_error

    receiver = receive([200], port=port)  # the receiver comes up
    assert webhooks.delivery_attempt(delivery_id=delivery_id, attempt=2) is None
    assert WebhookDelivery.objects.get(pk=delivery_id).status == "delivered"
    assert len(receiver.received) == 1


@pytest.mark.django_db
def test_a_webhook_made_inactive_before_delivery_is_not_sent(one_delivery, receive):
    receiver = receive([200])
    delivery_id = one_delivery(receiver.url)
    hook = WebhookDelivery.objects.get(pk=delivery_id).webhook
    webhooks.webhook_update(webhook_id=hook.pk, url=hook.url, events=hook.events, active=False)

    assert webhooks.delivery_attempt(delivery_id=delivery_id) is None
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.last_error) == ("failed", "webhook is inactive")
    assert receiver.received == []


@pytest.mark.django_db
def test_a_webhook_hears_of_a_lost_worker_as_a_failed_step(hook_settings, offline):
    webhooks.webhook_create(url="http://127.0.0.1:9/hook", events=["step.failed"])
    run = pending_run("lost")
    pipelines.run_advance(run_id=run.pk)
    step = run.steps.get()
    pipelines.step_begin(step_run_id=step.pk)
    StepRun.objects.filter(pk=step.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    with offline():
        assert pipelines.reap().lost == 1

    [delivery_id] = offline.queued
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.event == "step.failed"
    assert (delivery.payload["step"], delivery.payload["lost"]) == ("s", True)
    assert "worker lost" in delivery.payload["error"]


@pytest.mark.django_db(transaction=True)
def test_relays_in_parallel_make_each_delivery_once(hook_settings, monkeypatch):
    monkeypatch.setattr(webhooks, "enqueue", lambda delivery_id, attempt=1: None)
    hooks = [
        webhooks.webhook_create(url="http://127.0.0.1:9/hook", events=["run.finished"])
        for _ in range(2)
    ]
    org = Organization.objects.default()
    OutboxEvent.objects.bulk_create(
        OutboxEvent(
            organization=org,
            event="run.finished",
            payload={"organization": org.slug, "run": n, "pipeline": "p", "status": "succeeded"},
        )
        for n in range(250)  # more than one relay batch
    )

    relayed = race(*[pipelines.outbox_relay] * 3)

    assert sum(relayed) == 250, relayed
    assert not OutboxEvent.objects.filter(relayed_at__isnull=True).exists()
    made = list(WebhookDelivery.objects.values_list("webhook_id", "payload__run"))
    assert len(made) == len(set(made)) == 500
    assert {hook for hook, _ in made} == {h.pk for h in hooks}


@pytest.mark.django_db
def test_the_sweep_forgets_events_relayed_before_the_keep_period(hook_settings):
    org = Organization.objects.default()
    long_ago = timezone.now() - timedelta(days=8)
    _old, recent, pending = OutboxEvent.objects.bulk_create(
        OutboxEvent(organization=org, event="run.finished", relayed_at=relayed)
        for relayed in (long_ago, timezone.now(), None)
    )
    hook_settings.FIREFLY_OUTBOX_KEEP_DAYS = 7
    hook_settings.FIREFLY_OUTBOX_RELAY_AFTER_S = 3600  # the pending one is not overdue
    assert pipelines.outbox_sweep() == 0
    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == {recent.pk, pending.pk}
