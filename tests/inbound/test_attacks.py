"""Deliveries an attacker (or a confused sender) would make: each is refused with its own
answer, starts nothing, and is recorded."""

from __future__ import annotations

import time

import pytest

from inbound import services as inbound
from inbound.models import InboundDelivery, InboundHook
from inbound.receiving import delivery_receive
from orgs.models import Organization
from pipelines import services
from pipelines.errors import PermissionDenied
from pipelines.models import Run, SecurityEvent
from tests.inbound.conftest import PAYMENT, Sender, payment_body, refused, runs


def test_a_forged_signature_starts_nothing(hook, sender):
    forger = Sender(hook, "not-the-hooks-secret-at-all")
    response = forger.post()
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "bad_signature"
    assert runs() == 0
    assert refused(hook) == [(401, "Bad signature: X-Hub-Signature-256 does not match the body.")]


def test_the_signature_of_another_body_starts_nothing(hook, sender):
    signed = payment_body(amount=1)
    headers = sender.headers(signed, "d-1")
    response = sender.post(payment_body(amount=1_000_000), headers=headers)
    assert response.status_code == 401
    assert runs() == 0
    assert len(refused(hook)) == 1


@pytest.mark.parametrize(
    "header", ["", "sha256=", "md5=abcdef", "sha256=" + "0" * 64, "sha1=" + "0" * 40]
)
def test_a_missing_or_malformed_signature_starts_nothing(hook, sender, header):
    headers = {"X-Delivery": "d-1"}
    if header:
        headers["X-Hub-Signature-256"] = header
    response = sender.post(headers=headers)
    assert response.status_code == 401
    assert runs() == 0
    assert len(refused(hook)) == 1


def test_a_replayed_firefly_delivery_outside_the_window_starts_nothing(make_hook):
    hook = make_hook(signature_format="firefly", replay_window_s=60)
    sender = Sender(hook, hook.new_secret)
    old = int(time.time()) - 61
    response = sender.post(timestamp=str(old))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "replayed"
    ahead = int(time.time()) + 120
    assert sender.post(timestamp=str(ahead), delivery="d-2").status_code == 401
    assert runs() == 0
    assert [status for status, _ in refused(hook)] == [401, 401]
    # Within the window the same sender is accepted.
    assert sender.post(delivery="d-3").status_code == 202


def test_a_firefly_signature_over_another_timestamp_starts_nothing(make_hook):
    hook = make_hook(signature_format="firefly")
    sender = Sender(hook, hook.new_secret)
    body = payment_body()
    headers = sender.headers(body, "d-1", timestamp=str(int(time.time()) - 5))
    headers["Firefly-Timestamp"] = str(int(time.time()))  # moved forward: not what was signed
    assert sender.post(body, headers=headers).status_code == 401
    assert runs() == 0


def test_an_oversized_body_is_refused_before_it_is_read(make_hook):
    hook = make_hook(max_body_bytes=1000)
    sender = Sender(hook, hook.new_secret)
    response = sender.post(payment_body(payee="x" * 2000))
    assert response.status_code == 413
    assert runs() == 0
    [row] = InboundDelivery.objects.filter(hook=hook)
    assert (row.outcome, row.http_status, row.body_bytes) == ("refused", 413, row.body_bytes)
    assert row.body_bytes > 1000

    # Declared too large: not a byte is read. Not declared (streamed): one byte past the
    # limit at most.
    asked: list[int] = []

    def read(n: int) -> bytes:
        asked.append(n)
        return b"x" * n

    answer = delivery_receive(
        token=hook.token, read=read, headers={}, content_length=10**9, address="203.0.113.9"
    )
    assert (answer.status, asked) == (413, [])
    answer = delivery_receive(token=hook.token, read=read, headers={}, address="203.0.113.9")
    assert (answer.status, asked) == (413, [1001])
    assert runs() == 0


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"data": ', b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b"NaN"],
    ids=["text", "truncated", "not-utf8", "deep", "nan"],
)
def test_a_body_that_is_not_json_is_a_400(hook, sender, body):
    response = sender.post(body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed"
    assert runs() == 0
    assert [status for status, _ in refused(hook)] == [400]


def test_an_unknown_token_is_a_404_recorded_without_a_hook(hook, sender):
    for token in ("x" * 32, "bad!token%00", "a" * 300):
        response = sender.post(token=token)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert runs() == 0
    assert not InboundDelivery.objects.exists()
    event = SecurityEvent.objects.get(event="inbound_hook.unknown")
    assert event.address == "127.0.0.1"


def test_a_disabled_hook_answers_as_an_unknown_one_and_records_it(hook, sender):
    unknown = sender.post(token="y" * 32)
    inbound.hook_update(hook_id=hook.pk, enabled=False)
    disabled = sender.post()
    assert disabled.status_code == unknown.status_code == 404
    assert disabled.json() == unknown.json()
    assert runs() == 0
    assert refused(hook) == [(404, "the hook is disabled")]


@pytest.fixture
def other_org(db, payment):
    """Another organization with a pipeline of the same name and its own hook."""
    org = Organization.objects.create(slug="globex", name="Globex")
    services.pipeline_create(spec=PAYMENT, organization=org)
    hook = inbound.hook_create(
        pipeline="payment",
        name="payments",
        organization=org,
        input_mapping={"amount": "data.amount", "payee": "data.payee.name"},
        delivery_id_header="X-Delivery",
    )
    return org, hook


def test_another_organizations_secret_does_not_open_this_hook(hook, other_org):
    _, theirs = other_org
    response = Sender(hook, theirs.new_secret).post()
    assert response.status_code == 401
    assert runs() == 0


def test_a_hook_starts_only_its_own_organizations_pipeline(hook, sender, other_org):
    org, theirs = other_org
    mine = sender.post().json()["run"]
    their_run = Sender(theirs, theirs.new_secret).post().json()["run"]
    assert Run.objects.get(pk=mine).organization_id == Organization.objects.default().pk
    assert Run.objects.get(pk=their_run).organization_id == org.pk
    assert Run.objects.get(pk=their_run).pipeline_version.pipeline.organization_id == org.pk


def test_an_admin_cannot_hook_another_organizations_pipeline(users, other_org):
    org, _ = other_org
    boss = users["boss"]  # admin of the default organization only
    with pytest.raises(PermissionDenied):
        inbound.hook_create(pipeline="payment", name="mine", actor=boss, organization=org)
    assert SecurityEvent.objects.filter(event="inbound_hook.refused", actor=boss).exists()
    assert not InboundHook.objects.filter(name="mine").exists()
    # Naming it from their own organization finds only their own pipeline.
    created = inbound.hook_create(pipeline="payment", name="mine", actor=boss)
    assert created.pipeline.organization_id == Organization.objects.default().pk


def test_too_many_deliveries_are_a_429_with_retry_after(make_hook):
    hook = make_hook(rate_limit="3/minute")
    sender = Sender(hook, hook.new_secret)
    answers = [sender.post(delivery=f"d-{i}").status_code for i in range(5)]
    assert answers == [202, 202, 202, 429, 429]
    response = sender.post(delivery="d-9")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert runs() == 3
    assert [status for status, _ in refused(hook)] == [429, 429, 429]


def test_refusals_beyond_the_cap_are_not_recorded(hook, settings):
    settings.FIREFLY_INBOUND_REFUSALS_RECORDED_PER_MINUTE = 3
    forger = Sender(hook, "wrong-secret-wrong-secret")
    for i in range(6):
        assert forger.post(delivery=f"d-{i}").status_code == 401
    assert len(refused(hook)) == 3


def test_a_body_cut_off_mid_way_is_a_400_not_a_500(hook):
    def read(n: int) -> bytes:
        raise OSError("connection reset")

    answer = delivery_receive(token=hook.token, read=read, headers={}, content_length=10)
    assert answer.status == 400
    assert runs() == 0
    assert refused(hook) == [(400, "The body could not be read: connection reset.")]
