"""Receiving a delivery: check it, start its run once, and record what became of it.

The checks, in order, each with its answer: the hook (unknown or disabled: 404, the same
answer for both), the size (413, before more than the limit is read), the signature
(401), for the firefly format the timestamp's window (401), the rate limit (429), the
JSON (400), the delivery id (the same one again: 200 naming the run it started, nothing
started), the input mapping (400 naming the input and its expression), the pipeline's
input_schema (400 with the same details as the API). An accepted delivery's record, its
run and the run's `run.created` entry (naming the hook as what started it) commit in one
transaction; every refusal and duplicate is recorded in a transaction of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from jmespath.exceptions import JMESPathError
from rest_framework.throttling import SimpleRateThrottle

from inbound import mapping, signatures
from inbound.models import InboundDelivery, InboundHook
from inbound.services import hook_secrets
from orgs import rls
from pipelines import services as pipelines
from pipelines.errors import FireflyError, InvalidInput, NotFound
from pipelines.limits import measure
from pipelines.security import refusal_record
from webhooks import crypto

log = logging.getLogger(__name__)

Outcome = InboundDelivery.Outcome
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MAX_DELIVERY_ID = 200


@dataclass
class Answer:
    """The HTTP answer to a delivery: its status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    run_id: int | None = None


def _error(status: int, code: str, message: str, details: Any = None, **headers: str) -> Answer:
    body = {"error": {"code": code, "message": message, "details": details}}
    return Answer(status, body, dict(headers))


NO_SUCH_HOOK = (404, "not_found", "No such hook.")


class HookRateLimit(SimpleRateThrottle):
    """DRF's rate throttle (as firefly_site/throttles.py uses), keyed by the hook, at the
    hook's own rate: the counters live in the cache, shared when CACHE_URL is."""

    def __init__(self, hook: InboundHook) -> None:
        self.hook_id = hook.pk
        self.rate = hook.rate_limit or None
        if self.rate is None:
            self.num_requests, self.duration = None, None
        else:
            super().__init__()

    def get_cache_key(self, request: Any, view: Any) -> str:
        return f"inbound-hook-rate:{self.hook_id}"


@dataclass
class Delivery:
    """What is known of one request while it is checked."""

    hook: InboundHook
    headers: Mapping[str, str]
    address: str | None
    body: bytes = b""
    declared: int = 0
    delivery_id: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def size(self) -> int:
        return len(self.body) or self.declared

    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest() if self.body else ""


# --- recording ------------------------------------------------------------------------


def _may_record_refusal(hook_id: int) -> bool:
    """At most FIREFLY_INBOUND_REFUSALS_RECORDED_PER_MINUTE refusals of one hook are
    recorded each minute: whoever knows a hook's URL must not turn its delivery log into
    the next thing to flood. The rest are only logged."""
    key = f"inbound-refusals:{hook_id}:{int(time.time() // 60)}"
    if cache.add(key, 1, 120):
        return True
    try:
        count = cache.incr(key)
    except ValueError:  # expired in between
        cache.add(key, 1, 120)
        return True
    return count <= settings.FIREFLY_INBOUND_REFUSALS_RECORDED_PER_MINUTE


def _record(
    delivery: Delivery, outcome: str, status: int, reason: str = "", run_id: int | None = None
) -> None:
    # Outside any transaction of the delivery's: the refusal outlives its rollback.
    InboundDelivery.objects.create(
        organization_id=delivery.hook.organization_id,
        hook=delivery.hook,
        delivery_id=delivery.delivery_id[:MAX_DELIVERY_ID],
        outcome=outcome,
        reason=reason[:2000],
        http_status=status,
        run_id=run_id,
        address=delivery.address or None,
        body_bytes=delivery.size,
        body_sha256=delivery.sha256(),
    )


def _refused(delivery: Delivery, answer: Answer, reason: str = "") -> Answer:
    why = reason or answer.body["error"]["message"]
    if _may_record_refusal(delivery.hook.pk):
        _record(delivery, Outcome.REFUSED, answer.status, why)
    else:
        log.warning("inbound hook %s: refusal not recorded (too many): %s", delivery.hook.pk, why)
    return answer


def _unknown(token: str, address: str | None) -> Answer:
    # One record per address and minute: nothing to flood, and no hook to attach it to.
    if cache.add(f"inbound-unknown:{address}", 1, 60):
        refusal_record(
            event="inbound_hook.unknown",
            reason="a delivery to a hook that does not exist",
            address=address,
            token=token[:6],
        )
    return _error(*NO_SUCH_HOOK)


# --- the checks -----------------------------------------------------------------------


def _read(delivery: Delivery, read: Callable[[int], bytes]) -> Answer | None:
    limit = delivery.hook.max_body_bytes
    too_big = _error(413, "too_large", f"The body is larger than this hook's {limit:,} bytes.")
    if delivery.declared > limit:
        return _refused(delivery, too_big)
    # Never more than one byte past the limit, whatever Content-Length claimed.
    try:
        delivery.body = read(limit + 1)
    except OSError as exc:  # the sender went away mid-body (UnreadablePostError)
        return _refused(delivery, _error(400, "malformed", f"The body could not be read: {exc}."))
    if len(delivery.body) > limit:
        return _refused(delivery, too_big)
    return None


def _verify(delivery: Delivery) -> Answer | None:
    hook = delivery.hook
    try:
        secrets = hook_secrets(hook)
    except crypto.Undecryptable as exc:
        log.error("inbound hook %s: %s", hook.pk, exc)
        answer = _error(503, "unavailable", "This hook cannot check signatures now.")
        return _refused(delivery, answer, str(exc))
    try:
        if hook.signature_format == InboundHook.Format.FIREFLY:
            stamp = signatures.verify_firefly(
                secrets,
                delivery.body,
                delivery.header(signatures.FIREFLY_SIGNATURE),
                delivery.header(signatures.FIREFLY_TIMESTAMP),
            )
            age = time.time() - stamp
            if abs(age) > hook.replay_window_s:
                answer = _error(
                    401,
                    "replayed",
                    f"{signatures.FIREFLY_TIMESTAMP} is {abs(age):.0f}s "
                    f"{'old' if age > 0 else 'ahead'}; this hook accepts "
                    f"{hook.replay_window_s}s either way.",
                )
                return _refused(delivery, answer)
        else:
            name = hook.signature_header
            signatures.verify_hmac(secrets, delivery.body, delivery.header(name), name)
    except signatures.BadSignature as exc:
        return _refused(delivery, _error(401, "bad_signature", f"Bad signature: {exc}."))
    return None


def _throttled(delivery: Delivery) -> Answer | None:
    limit = HookRateLimit(delivery.hook)
    if limit.rate is None or limit.allow_request(None, None):
        return None
    wait = int(limit.wait() or 1) or 1
    answer = _error(
        429,
        "throttled",
        f"More than {limit.rate} deliveries to this hook; try again in {wait}s.",
        **{"Retry-After": str(wait)},
    )
    return _refused(delivery, answer)


def _parse(delivery: Delivery) -> tuple[Any, Answer | None]:
    max_depth = settings.FIREFLY_JSON_MAX_DEPTH
    try:
        payload = json.loads(delivery.body.decode("utf-8"), parse_constant=_no_constants)
    except RecursionError:
        payload, problem = None, f"nested deeper than {max_depth} levels"
    except (ValueError, UnicodeDecodeError) as exc:
        payload, problem = None, str(exc)
    else:
        depth, _ = measure(payload, max_depth)
        problem = f"nested deeper than {max_depth} levels" if depth > max_depth else ""
    if problem:
        answer = _error(400, "malformed", f"The body is not JSON: {problem}.")
        return None, _refused(delivery, answer)
    return payload, None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _delivery_id(delivery: Delivery, payload: Any) -> Answer | None:
    hook = delivery.hook
    if hook.delivery_id_header:
        found: Any = delivery.header(hook.delivery_id_header)
        where = f"the {hook.delivery_id_header} header"
    elif hook.delivery_id_path:
        where = f"the body's {hook.delivery_id_path}"
        try:
            found = mapping.search(hook.delivery_id_path, payload)
        except JMESPathError:
            found = None
        if isinstance(found, int | float) and not isinstance(found, bool):
            found = str(found)
    elif hook.signature_format == InboundHook.Format.FIREFLY and delivery.header(
        signatures.FIREFLY_DELIVERY
    ):
        found, where = delivery.header(signatures.FIREFLY_DELIVERY), "Firefly-Delivery"
    else:
        delivery.delivery_id = f"sha256:{delivery.sha256()}"
        return None
    if not isinstance(found, str) or not found.strip():
        answer = _error(
            400,
            "no_delivery_id",
            f"No delivery id: {where} is missing or not a string; it names the delivery "
            "so that a repeat starts nothing.",
        )
        return _refused(delivery, answer)
    if len(found) > MAX_DELIVERY_ID:
        answer = _error(
            400, "invalid", f"The delivery id in {where} is over {MAX_DELIVERY_ID} characters."
        )
        return _refused(delivery, answer)
    delivery.delivery_id = found.strip()
    return None


def _duplicate(delivery: Delivery) -> Answer | None:
    accepted = InboundDelivery.objects.filter(
        hook=delivery.hook, delivery_id=delivery.delivery_id, outcome=Outcome.ACCEPTED
    )
    found = list(accepted.values_list("run_id", flat=True)[:1])
    if not found:
        return None
    run_id = found[0]
    _record(delivery, Outcome.DUPLICATE, 200, "already accepted", run_id)
    return Answer(200, {"run": run_id, "duplicate": True}, run_id=run_id)


def _map(delivery: Delivery, payload: Any) -> tuple[dict[str, Any], Answer | None]:
    try:
        return mapping.map_inputs(delivery.hook.input_mapping, payload), None
    except mapping.MappingError as exc:
        answer = _error(
            400,
            "mapping_failed",
            f"The input mapping failed: {exc}.",
            [{"field": exc.name, "expression": exc.expression, "message": exc.problem}],
        )
        return {}, _refused(delivery, answer)


def _start(delivery: Delivery, inputs: dict[str, Any]) -> Answer:
    hook = delivery.hook
    trigger = {
        "type": "inbound_hook",
        "hook": hook.pk,
        "name": hook.name,
        "delivery_id": delivery.delivery_id,
    }
    try:
        with transaction.atomic():
            run, _ = pipelines.run_start_or_replay(
                pipeline=hook.pipeline.name,
                inputs=inputs,
                actor=None,
                organization=hook.organization_id,
                trigger=trigger,
                # Its first steps queued in this same transaction: their messages leave
                # as it commits, a broker round trip sooner than through `advance_run`.
                advance=True,
            )
            # Last, so that a concurrent copy waits on the unique index only briefly
            # and then fails here, taking its run with it.
            _record(delivery, Outcome.ACCEPTED, 202, run_id=run.pk)
    except IntegrityError:
        duplicate = _duplicate(delivery)
        if duplicate is None:
            raise
        return duplicate
    except InvalidInput as exc:
        return _refused(delivery, _error(400, exc.code, exc.message, exc.details))
    except NotFound as exc:
        # The pipeline has no version to start (or is gone): the hook cannot work now.
        return _refused(delivery, _error(409, "no_version", exc.message))
    except FireflyError as exc:
        return _refused(delivery, _error(exc.http_status, exc.code, exc.message, exc.details))
    return Answer(202, {"run": run.pk}, run_id=run.pk)


# --- the one entry point --------------------------------------------------------------


def delivery_receive(
    *,
    token: str,
    read: Callable[[int], bytes],
    headers: Mapping[str, str],
    content_length: int = 0,
    address: str | None = None,
) -> Answer:
    """Check one request to `/hooks/<token>/` and start its run; see the module's text.

    `read(n)` returns at most n bytes of the body; `content_length` is what the request
    declared (0 when it did not).
    """
    if not token or len(token) > 64 or not set(token) <= TOKEN_CHARS:
        return _unknown(token, address)
    # Found as Firefly itself: a sender with a session of some organization (a person
    # trying a hook from their browser) must not have the lookup held to that one.
    with rls.scoped(None):
        hook = InboundHook.objects.select_related("pipeline").filter(token=token).first()
    if hook is None:
        return _unknown(token, address)
    lowered = {name.lower(): value for name, value in headers.items()}
    delivery = Delivery(hook, lowered, address, declared=max(0, content_length))
    # From here on the connection acts for the hook's organization (row-level security).
    with rls.scoped(hook.organization_id):
        if not hook.enabled:
            return _refused(delivery, _error(*NO_SUCH_HOOK), "the hook is disabled")
        refused = _read(delivery, read) or _verify(delivery) or _throttled(delivery)
        if refused:
            return refused
        payload, refused = _parse(delivery)
        if refused:
            return refused
        refused = _delivery_id(delivery, payload) or _duplicate(delivery)
        if refused:
            return refused
        inputs, refused = _map(delivery, payload)
        if refused:
            return refused
        return _start(delivery, inputs)
