"""Handoffs in Django admin: read-only envelopes, filters, search, parents and children."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pipelines import services
from pipelines.models import HandoffEnvelope, Run

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:pipelines_handoffenvelope_changelist")


def rows(content: bytes) -> int:
    return content.count(b'<td class="field-origin_run_link')


def envelope_url(envelope: HandoffEnvelope) -> str:
    return reverse("admin:pipelines_handoffenvelope_change", args=[envelope.pk])


def run_url(run_id: int) -> str:
    return reverse("admin:pipelines_run_change", args=[run_id])


@pytest.fixture
def origin(make_pipeline: Any) -> Run:
    name = make_pipeline([{"name": "a", "type": "noop"}], name="origin")
    make_pipeline([{"name": "a", "type": "noop"}], name="intake")
    make_pipeline([{"name": "a", "type": "noop"}], name="billing")
    return services.run_start(pipeline=name, inputs={})


def test_envelopes_list_filter_and_search(admin_client: Any, origin: Run, hand_off: Any) -> None:
    accepted = hand_off(origin, to="intake", payload={"ticket": 7}, wait=True)
    queued = hand_off(origin, to="billing", started=False)
    settled = hand_off(origin, to="billing")
    services.acknowledge_handoff(envelope_id=settled.pk, decision="paid")

    listing = admin_client.get(CHANGELIST)
    by_status = {
        status: admin_client.get(CHANGELIST, {"status": status}).content
        for status in ("queued", "accepted", "acknowledged")
    }
    waiting = admin_client.get(CHANGELIST, {"wait__exact": "1"})
    billing = admin_client.get(CHANGELIST, {"q": "bill"})
    by_origin = admin_client.get(CHANGELIST, {"q": str(origin.pk)})

    assert listing.status_code == 200
    assert rows(listing.content) == 3
    assert run_url(origin.pk).encode() in listing.content
    assert run_url(accepted.child_run_id).encode() in listing.content
    for status, envelope in (("queued", queued), ("accepted", accepted), ("acknowledged", settled)):
        assert rows(by_status[status]) == 1, status
        assert envelope_url(envelope).encode() in by_status[status]
    assert rows(waiting.content) == 1
    assert envelope_url(accepted).encode() in waiting.content
    assert rows(billing.content) == 2
    assert envelope_url(accepted).encode() not in billing.content
    assert rows(by_origin.content) == 3


def test_an_envelope_is_read_only(admin_client: Any, origin: Run, hand_off: Any) -> None:
    envelope = hand_off(origin, to="intake", payload={"ticket": 7})
    before = HandoffEnvelope.objects.values().get(pk=envelope.pk)

    page = admin_client.get(envelope_url(envelope))
    add = admin_client.get(reverse("admin:pipelines_handoffenvelope_add"))
    change = admin_client.post(envelope_url(envelope), {"decision": '"forged"'})
    delete = admin_client.post(
        reverse("admin:pipelines_handoffenvelope_delete", args=[envelope.pk]), {"post": "yes"}
    )

    assert page.status_code == 200
    assert b"ticket" in page.content
    assert run_url(origin.pk).encode() in page.content
    assert run_url(envelope.child_run_id).encode() in page.content
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert HandoffEnvelope.objects.values().get(pk=envelope.pk) == before


def test_a_run_shows_its_children_envelopes_and_lifecycle(
    admin_client: Any, origin: Run, hand_off: Any
) -> None:
    envelope = hand_off(origin, to="intake")
    Run.objects.filter(pk=origin.pk).update(
        status=Run.Status.RUNNING, finishing="succeeded", disposition={"filed": "INC-7"}
    )
    origin.refresh_from_db()

    parent_page = admin_client.get(run_url(origin.pk))
    child_page = admin_client.get(run_url(envelope.child_run_id))

    assert parent_page.status_code == 200
    content = parent_page.content.decode()
    assert run_url(envelope.child_run_id) in content  # the child run's row links it
    assert envelope_url(envelope) in content  # the envelope's row links it
    assert "INC-7" in content
    assert origin.trace_id in content
    assert 'alt="True"' in content  # on_finish running
    child = child_page.content.decode()
    assert run_url(origin.pk) in child
    assert f">handoff {envelope.pk}<" in child


def test_a_run_page_costs_the_same_with_many_children(
    admin_client: Any, origin: Run, hand_off: Any
) -> None:
    def queries(run: Run) -> int:
        admin_client.get(run_url(run.pk))
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(run_url(run.pk))
        assert response.status_code == 200
        return len(captured.captured_queries)

    other = services.run_start(pipeline="origin", inputs={})
    hand_off(origin, to="intake")
    for _ in range(5):
        hand_off(other, to="intake")

    assert queries(other) == queries(origin)
