"""The run page's Handoffs section: parent, child runs, envelopes and acknowledging them."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from pipelines.models import AuditEntry, HandoffEnvelope, Run
from tests.web.conftest import waiting_run

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def page(client: Any, run: Run | int, part: str = "") -> str:
    """The run page, or one of its htmx parts."""
    run_id = run if isinstance(run, int) else run.pk
    url = reverse("run", args=[run_id])
    response = client.get(url, {"part": part}, **HX) if part else client.get(url)
    assert response.status_code == 200
    return str(response.content.decode())


def acknowledge(client: Any, envelope: HandoffEnvelope, decision: str, **extra: Any) -> Any:
    url = reverse("handoff-acknowledge", args=[envelope.pk])
    return client.post(url, {"decision": decision}, **extra)


def acknowledged_entries(run: Run) -> int:
    return AuditEntry.objects.filter(run=run, event="handoff.acknowledged").count()


# --- showing ----------------------------------------------------------------------------


def test_the_origin_lists_its_children_and_envelopes(client, users, hand_off):
    origin = waiting_run(users["starter"])
    envelope = hand_off(origin, payload={"ticket": "INC-7"}, wait=True)
    queued = hand_off(origin, started=False, origin_step="")
    client.force_login(users["r1"])

    html = page(client, origin)

    assert "<h2>Handoffs</h2>" in html
    child_link = f'<a href="{reverse("run", args=[envelope.child_run_id])}">'
    # In the child runs, in the envelope's row, and where the waiting step's row says it waits.
    assert html.count(child_link) == 3
    assert f'id="handoff-{envelope.pk}"' in html
    assert f'id="handoff-{queued.pk}"' in html
    assert "INC-7" in html
    assert "waits" in html
    assert "on_finish" in html  # the envelope on_finish handed off
    assert 'class="pill st-queued">queued<' in html
    assert 'class="pill st-pending">pending<' in html  # the child run's status
    assert 'class="handed-off-by"' not in html


def test_a_child_links_its_parent_and_the_envelope(client, users, hand_off):
    origin = waiting_run(users["starter"])
    envelope = hand_off(origin)
    client.force_login(users["r1"])

    html = page(client, envelope.child_run_id)

    parent = reverse("run", args=[origin.pk])
    assert f'<a href="{parent}">run #{origin.pk}</a> at step <code>review</code>' in html
    assert f'href="{parent}#handoff-{envelope.pk}"' in html


def test_a_run_without_handoffs_has_no_section(client, users):
    run = waiting_run(users["starter"])
    client.force_login(users["starter"])

    assert "<h2>Handoffs</h2>" not in page(client, run)


def test_only_who_may_cancel_sees_the_acknowledge_form(client, users, hand_off):
    origin = waiting_run(users["starter"])
    hand_off(origin)
    client.force_login(users["outsider"])
    outsider = page(client, origin)
    client.force_login(users["starter"])
    starter = page(client, origin)
    client.force_login(users["boss"])
    staff = page(client, origin)

    assert "Acknowledge</button>" not in outsider
    assert "Cancel run" not in outsider
    assert "Acknowledge</button>" in starter
    assert "Acknowledge</button>" in staff


def test_finishing_badge_and_disposition(client, users):
    run = waiting_run(users["starter"])
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, finishing="succeeded", disposition={"filed": "INC-7"}
    )
    client.force_login(users["r1"])

    live = page(client, run, part="live")
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED)
    finished = page(client, run, part="live")

    assert "finishing: succeeded" in live
    assert "<h2>Disposition</h2>" in live
    assert "INC-7" in live
    assert "finishing:" not in finished
    assert "INC-7" in finished


def test_the_section_is_a_partial_that_follows_live_runs(client, users, hand_off):
    origin = waiting_run(users["starter"])
    envelope = hand_off(origin)
    client.force_login(users["r1"])

    fragment = page(client, origin, part="handoffs")
    Run.objects.filter(pk=origin.pk).update(status=Run.Status.SUCCEEDED)
    Run.objects.filter(pk=envelope.child_run_id).update(status=Run.Status.SUCCEEDED)
    settled = page(client, origin, part="handoffs")

    assert "<html" not in fragment
    assert f'id="handoff-{envelope.pk}"' in fragment
    assert 'hx-trigger="every 5s' in fragment
    assert 'hx-trigger="every 5s' not in settled


# --- acknowledging ----------------------------------------------------------------------


def test_acknowledge_then_again_is_too_late(client, users, hand_off):
    origin = waiting_run(users["starter"])
    envelope = hand_off(origin)
    client.force_login(users["starter"])

    response = acknowledge(client, envelope, "filed as INC-7", **HX)
    again = acknowledge(client, envelope, "twice", **HX)

    assert response.status_code == 200
    text = response.content.decode()
    assert f"Handoff {envelope.pk} acknowledged." in text
    assert "<html" not in text
    assert "filed as INC-7" in text
    assert "Acknowledge</button>" not in text
    envelope.refresh_from_db()
    assert envelope.status == "acknowledged"
    assert envelope.acknowledged_by == users["starter"]
    assert envelope.decision == "filed as INC-7"
    assert acknowledged_entries(origin) == 1
    assert again.status_code == 409
    assert "already acknowledged by starter" in again.content.decode()
    envelope.refresh_from_db()
    assert envelope.decision == "filed as INC-7"


def test_a_plain_post_redirects_to_the_envelope_with_a_message(client, users, hand_off):
    origin = waiting_run(users["starter"])
    envelope = hand_off(origin)
    client.force_login(users["boss"])

    response = acknowledge(client, envelope, "merged")
    followed = client.get(response["Location"])

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('run', args=[origin.pk])}#handoff-{envelope.pk}"
    assert f"Handoff {envelope.pk} acknowledged." in followed.content.decode()
    envelope.refresh_from_db()
    assert (envelope.decision, envelope.acknowledged_by) == ("merged", users["boss"])


def test_a_forged_post_by_an_outsider_is_forbidden(client, users, hand_off):
    origin = waiting_run(users["starter"])
    envelope = hand_off(origin)
    client.force_login(users["outsider"])

    htmx = acknowledge(client, envelope, "mine", **HX)
    plain = acknowledge(client, envelope, "mine")

    assert htmx.status_code == 403
    assert "may acknowledge its handoffs" in htmx.content.decode()
    assert plain.status_code == 403
    envelope.refresh_from_db()
    assert envelope.acknowledged_at is None
    assert acknowledged_entries(origin) == 0


def test_an_empty_decision_is_refused_where_the_form_was(client, users, hand_off):
    origin = waiting_run(users["starter"])
    envelope = hand_off(origin)
    client.force_login(users["starter"])

    response = acknowledge(client, envelope, "   ", **HX)

    assert response.status_code == 400
    text = response.content.decode()
    assert 'class="field-error"' in text
    assert "Acknowledge</button>" in text
    envelope.refresh_from_db()
    assert envelope.acknowledged_at is None


def test_unknown_envelope_and_get_are_refused(client, users, hand_off):
    envelope = hand_off(waiting_run(users["starter"]))
    client.force_login(users["boss"])

    assert (
        client.post(reverse("handoff-acknowledge", args=[999999]), {"decision": "x"}).status_code
        == 404
    )
    assert client.get(reverse("handoff-acknowledge", args=[envelope.pk])).status_code == 405
    envelope.refresh_from_db()
    assert envelope.acknowledged_at is None


# --- query counts -----------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 20])
def test_run_page_queries_do_not_grow(client, users, hand_off, django_assert_max_num_queries, rows):
    origin = waiting_run(users["starter"])
    envelopes = [hand_off(origin) for _ in range(rows)]
    client.force_login(users["starter"])
    page(client, origin)  # the pipeline spec is cached after this
    # session, user, memberships, run, steps, child runs, envelopes, checkpoints, audit page;
    # each request also enters and leaves its organization (row-level security, orgs/rls.py);
    # and the run's unsettled work, one query per kind (tasks, handoffs, steps, deliveries,
    # queued schedule firings); whether the nav offers Insights.
    with django_assert_max_num_queries(17):
        html = page(client, origin)
    # session, user, memberships, run, child runs, envelopes.
    with django_assert_max_num_queries(8):
        fragment = page(client, origin, part="handoffs")
    # A child's page adds the envelope it came from.
    with django_assert_max_num_queries(18):
        child = page(client, envelopes[-1].child_run_id)
    assert html.count("Acknowledge</button>") == rows
    assert fragment.count('<tr id="handoff-') == rows
    assert f"#handoff-{envelopes[-1].pk}" in child
