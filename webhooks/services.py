"""Webhook writes: subscriptions, one delivery row per event, signed HTTP attempts, the sweep."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from functools import partial
from typing import Any

import requests
from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from firefly_site import metrics
from orgs import selectors as orgs
from pipelines import events, outbound
from pipelines.errors import PermissionDenied
from pipelines.security import refusal_record
from webhooks import crypto
from webhooks.models import (
    REFUSED,
    WEBHOOK_EVENTS,
    Webhook,
    WebhookDelivery,
    new_webhook_secret,
    validate_webhook_events,
    validate_webhook_url,
)

log = logging.getLogger(__name__)

# Longest wait between two attempts, whatever the attempt number.
MAX_BACKOFF_S = 3600.0

# The names the tasks had in the approvals app: queued messages and the beat schedule
# of an older deployment still find them.
DELIVER_TASK = "approvals.tasks.deliver_webhook"
SWEEP_TASK = "approvals.tasks.sweep_webhooks"


def webhook_url_check(*, url: str, actor: Any = None, address: str | None = None) -> None:
    """Refuse a URL the outbound guard would not send to, and record the refusal."""
    try:
        validate_webhook_url(url)
    except ValidationError as exc:
        if exc.code == REFUSED:
            refusal_record(
                event="outbound.refused",
                reason="; ".join(exc.messages),
                actor=actor,
                address=address,
                url=url,
                purpose="webhook",
            )
        raise


def webhook_create(
    *,
    url: str,
    events: list[str],
    secret: str = "",
    active: bool = True,
    actor: Any = None,
    address: str | None = None,
    organization: Any = None,
) -> Webhook:
    """A webhook of `organization` (None: the default one); an admin of it (or Firefly
    itself, actor None) creates it. It only ever hears of that organization's events."""
    org_id = orgs.pk_of(organization)
    if actor is not None and not orgs.is_admin(actor, org_id):
        reason = "only the organization's admins may add webhooks"
        refusal_record(
            event="webhook.refused",
            reason=reason,
            actor=actor,
            address=address,
            organization=org_id,
        )
        raise PermissionDenied("Only the organization's admins may add webhooks.")
    # Checked before the transaction: the refusal's record must outlive its rollback.
    webhook_url_check(url=url, actor=actor, address=address)
    validate_webhook_events(events)
    plaintext = secret or new_webhook_secret()
    with transaction.atomic():
        webhook = Webhook.objects.create(
            organization_id=org_id,
            url=url,
            events=list(dict.fromkeys(events)),
            secret_encrypted=crypto.encrypt(plaintext),
            active=active,
            created_by=actor,
        )
    webhook.new_secret = plaintext  # for the one response that shows it
    return webhook


def webhook_update(
    *,
    webhook_id: int,
    url: str,
    events: list[str],
    active: bool,
    secret: str = "",
    actor: Any = None,
    address: str | None = None,
) -> Webhook:
    """Change a subscription; an empty `secret` keeps the one it has."""
    webhook_url_check(url=url, actor=actor, address=address)
    validate_webhook_events(events)
    with transaction.atomic():
        webhook = Webhook.objects.select_for_update().get(pk=webhook_id)
        webhook.url = url
        webhook.events = list(dict.fromkeys(events))
        if secret:
            webhook.secret_encrypted = crypto.encrypt(secret)
        webhook.active = active
        webhook.save(update_fields=["url", "events", "secret_encrypted", "active"])
        return webhook


def webhook_secret_rotate(*, webhook_id: int) -> Webhook:
    """Give a subscription a new secret; the one it replaces still signs for a grace period.

    Deliveries sent in the next FIREFLY_WEBHOOK_SECRET_GRACE_S carry a signature with each
    secret, so a receiver may switch to the new one at any time in between. Rotating again
    within the grace period drops the oldest secret at once.
    """
    plaintext = new_webhook_secret()
    grace = timedelta(seconds=settings.FIREFLY_WEBHOOK_SECRET_GRACE_S)
    with transaction.atomic():
        webhook = Webhook.objects.select_for_update().get(pk=webhook_id)
        webhook.previous_secret_encrypted = webhook.secret_encrypted
        webhook.previous_secret_until = timezone.now() + grace
        webhook.secret_encrypted = crypto.encrypt(plaintext)
        webhook.save(
            update_fields=[
                "secret_encrypted",
                "previous_secret_encrypted",
                "previous_secret_until",
            ]
        )
    webhook.new_secret = plaintext  # for the one page that shows it
    return webhook


# --- events -> deliveries -------------------------------------------------------------


def deliveries_create(*, event: str, data: dict[str, Any]) -> list[int]:
    """One pending delivery per active webhook of the event's organization subscribed to
    `event`; sent after commit. An event of no organization reaches no webhook.

    The outbox relay calls it in the transaction that marks the event relayed, so each
    event makes its deliveries exactly once.
    """
    organization = data.get("organization")
    if not organization:
        return []
    hooks = [
        h
        for h in Webhook.objects.filter(active=True, organization__slug=organization)
        if event in h.events
    ]
    if not hooks:
        return []
    # Round-trip through JSON now, so every attempt sends exactly what the event said.
    payload = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    with transaction.atomic():
        made = WebhookDelivery.objects.bulk_create(
            WebhookDelivery(
                organization_id=hook.organization_id, webhook=hook, event=event, payload=payload
            )
            for hook in hooks
        )
        ids = [d.pk for d in made]
        for delivery_id in ids:
            # After commit: a worker must find the row it is handed.
            transaction.on_commit(partial(enqueue, delivery_id))
    return ids


def enqueue(delivery_id: int, attempt: int = 1) -> None:
    # By name: the tasks call these services, so the services never import the tasks.
    current_app.send_task(DELIVER_TASK, args=(delivery_id,), kwargs={"attempt": attempt})


def on_event(event: str, payload: dict[str, Any]) -> None:
    deliveries_create(event=event, data=payload)


_hook: events.Hook | None = None

# Where a run's event may make a delivery: an active webhook of its organization
# subscribed to it. The outbox row is written only then, by the statement that checks.
SUBSCRIBED = (
    f"EXISTS (SELECT 1 FROM {Webhook._meta.db_table} w WHERE w.organization_id = %s"
    " AND w.active AND w.events @> jsonb_build_array(%s::text))"
)


def register() -> None:
    """Subscribe webhooks to the event stream (once; WebhooksConfig.ready calls it).

    Durably: the events go through the outbox (pipelines.services.outbox).
    """
    global _hook
    if _hook is None:
        _hook = events.register(
            on_event, events=WEBHOOK_EVENTS, durable=True, listens_where=SUBSCRIBED
        )


# --- sending --------------------------------------------------------------------------


def body_of(delivery: WebhookDelivery) -> str:
    envelope = {
        "id": str(delivery.event_id),
        "type": delivery.event,
        "created_at": delivery.created_at.isoformat(),
        "data": delivery.payload,
    }
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True)


def sign(secret: str, timestamp: int, body: str) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signature_header(webhook: Webhook, timestamp: int, body: str) -> str:
    """`sha256=<current>`, then `, sha256=<previous>` while a rotated-out secret is in grace.

    The only place secrets are decrypted; raises crypto.Undecryptable when the key is wrong.
    """
    secrets = [crypto.decrypt(webhook.secret_encrypted)]
    until = webhook.previous_secret_until
    if webhook.previous_secret_encrypted and until is not None and until > timezone.now():
        secrets.append(crypto.decrypt(webhook.previous_secret_encrypted))
    return ", ".join(sign(secret, timestamp, body) for secret in secrets)


def backoff(attempt: int) -> float:
    return float(min(settings.FIREFLY_WEBHOOK_BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S))


def delivery_attempt(*, delivery_id: int, attempt: int = 1) -> float | None:
    """Make attempt number `attempt`; return the seconds to wait before the next, or None.

    Each message names the attempt it makes (the first message 1, a retry the next, the
    sweep the one after the last made), so a copy of a message, whether it arrives with
    the original, while its request is in flight or after it, finds that attempt taken
    and sends nothing. None when done, or when the attempt is not this message's to make.
    """
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if (
        delivery is None
        or delivery.status != WebhookDelivery.Status.PENDING
        or delivery.attempts != attempt - 1
    ):
        return None
    # The claim: only the message that moves `attempts` from attempt - 1 sends. Taking
    # the number from the row instead would let a copy that reads it after this claim
    # take the next number and send the same event while this request is in flight.
    in_flight = timedelta(seconds=settings.FIREFLY_WEBHOOK_TIMEOUT_S)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=attempt - 1
    ).update(attempts=attempt, next_attempt_at=timezone.now() + in_flight)
    if not claimed:
        return None
    webhook = delivery.webhook
    if not webhook.active:
        _record(delivery, status=WebhookDelivery.Status.FAILED, error="webhook is inactive")
        return None

    body = body_of(delivery)
    timestamp = int(time.time())
    try:
        signature = signature_header(webhook, timestamp, body)
    except crypto.Undecryptable as exc:
        # Final, and loud: sending unsigned or wrongly signed would only be refused, and
        # every retry would fail the same way until the key is put right.
        log.error("webhook %s delivery %s: %s", webhook.pk, delivery.pk, exc)
        _record(delivery, status=WebhookDelivery.Status.FAILED, error=str(exc))
        return None
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Firefly-Webhooks/1",
        "Firefly-Event": delivery.event,
        "Firefly-Delivery": str(delivery.event_id),
        "Firefly-Timestamp": str(timestamp),
        "Firefly-Signature": signature,
    }
    code: int | None = None
    error = ""
    started = time.monotonic()
    try:
        # Checked again at every attempt: the allow-list may have shrunk, and the name
        # may resolve elsewhere now. No redirects are followed; where one points is
        # checked all the same, so that one toward a forbidden place is refused.
        response = outbound.send(
            "POST",
            webhook.url,
            allowed=outbound.WEBHOOKS,
            max_redirects=0,
            timeout=settings.FIREFLY_WEBHOOK_TIMEOUT_S,
            headers=headers,
            data=body.encode(),
        )
        code = response.status_code
    except outbound.Refused as exc:
        # Final: the same URL would be refused again on every retry.
        _record(delivery, status=WebhookDelivery.Status.FAILED, error=f"refused: {exc}")
        refusal_record(
            event="outbound.refused",
            reason=str(exc),
            url=exc.url,
            purpose="webhook",
            webhook=webhook.pk,
            delivery=delivery.pk,
        )
        return None
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"
    latency_ms = round((time.monotonic() - started) * 1000)

    if code is not None and 200 <= code < 300:
        _record(
            delivery,
            status=WebhookDelivery.Status.DELIVERED,
            code=code,
            latency_ms=latency_ms,
            delivered_at=timezone.now(),
        )
        return None
    retryable = code is None or code >= 500 or code == 429
    if code is not None:
        error = f"HTTP {code}"
    done = not retryable or attempt >= settings.FIREFLY_WEBHOOK_MAX_ATTEMPTS
    status = WebhookDelivery.Status.FAILED if done else WebhookDelivery.Status.PENDING
    log.warning(
        "webhook %s delivery %s (%s) attempt %s: %s",
        webhook.pk,
        delivery.pk,
        delivery.event,
        attempt,
        error,
    )
    wait = None if done else backoff(attempt)
    next_at = timezone.now() + timedelta(seconds=wait or 0)
    _record(delivery, status=status, code=code, latency_ms=latency_ms, error=error, next_at=next_at)
    return wait


def _record(
    delivery: WebhookDelivery,
    *,
    status: str,
    code: int | None = None,
    latency_ms: int | None = None,
    error: str = "",
    delivered_at: Any = None,
    next_at: Any = None,
) -> None:
    metrics.WEBHOOK_ATTEMPTS.labels(status).inc()
    WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.PENDING).update(
        status=status,
        response_code=code,
        latency_ms=latency_ms,
        last_error=error[:2000],
        delivered_at=delivered_at,
        **({"next_attempt_at": next_at} if next_at else {}),
    )


def deliveries_sweep() -> int:
    """Send again the pending deliveries whose message was lost; returns how many.

    A delivery's next attempt is due at `next_attempt_at`; one still pending
    FIREFLY_REQUEUE_AFTER_S later was never picked up (or its worker died mid-attempt).
    Each is sent once per sweep that finds it (the conditional update), for the attempt
    after the last one made: should the lost message turn up after all, it names the
    same attempt, and only one of the two sends.
    """
    now = timezone.now()
    overdue = now - timedelta(seconds=settings.FIREFLY_REQUEUE_AFTER_S)
    pending = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=overdue
    )
    sent = 0
    for delivery_id, due, made in pending.values_list("pk", "next_attempt_at", "attempts"):
        if WebhookDelivery.objects.filter(
            pk=delivery_id,
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at=due,
            attempts=made,
        ).update(next_attempt_at=now):
            enqueue(delivery_id, attempt=made + 1)
            sent += 1
    if sent:
        log.warning("webhooks: sent %s pending deliveries again (their messages were lost)", sent)
    return sent


# --- retention (pipelines/services/retention.py calls these through its hooks) ---------
# Deliveries name their run in the payload (no key), as the unsettled-work check reads it.


def deliveries_erase(run_ids: list[int]) -> None:
    """Keep which event went where about the runs, not their data; a pending delivery
    still goes out, with the data left out (`redacted`)."""
    kept = ("organization", "run", "pipeline", "step", "status", "event")
    for delivery in WebhookDelivery.objects.filter(payload__run__in=run_ids).only("payload"):
        payload = {k: v for k, v in delivery.payload.items() if k in kept}
        WebhookDelivery.objects.filter(pk=delivery.pk).update(payload={**payload, "redacted": True})


def deliveries_purge(run_ids: list[int]) -> None:
    """Delete the runs' deliveries that are done with (sent, or given up)."""
    WebhookDelivery.objects.filter(payload__run__in=run_ids).exclude(
        status=WebhookDelivery.Status.PENDING
    ).delete()
