"""The audit trail in Django admin, in Chromium: every column in view, search by who acted."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import waiting_run

COLUMNS = ["created at", "run", "pipeline", "step name", "event", "actor name", "status"]


def test_every_audit_column_is_in_view_at_1280_px_and_search_finds_an_actor(
    page_for: Any, users: dict[str, Any], django_user_model: Any, live_server: Any
) -> None:
    auditor = django_user_model.objects.create_superuser("auditor", "a@example.com", "x")
    waiting_run(users["starter"], name="a-rather-long-pipeline-name-for-the-audit-list")
    page = page_for(auditor)  # a 1280 x 900 window
    page.goto(f"{live_server.url}/admin/pipelines/auditentry/")

    headers = [h.strip().lower() for h in page.locator("#result_list thead th").all_inner_texts()]
    assert headers[: len(COLUMNS)] == COLUMNS
    assert headers[-2:] == ["latency ms", "hmac"]
    # Nothing scrolls sideways, the page nor the list, and the last column (the HMAC
    # mark) lies inside the window.
    widths = page.evaluate(
        """() => {
            const list = document.querySelector('#result_list');
            const last = list.querySelector('tbody tr td:last-child').getBoundingClientRect();
            return {
                page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
                results: list.parentElement.scrollWidth - list.parentElement.clientWidth,
                lastRight: last.right,
                window: window.innerWidth,
            };
        }"""
    )
    assert widths["page"] == 0, widths
    assert widths["results"] == 0, widths
    assert widths["lastRight"] <= widths["window"], widths

    # Searching a person's name finds what they did, and only that.
    page.fill("#searchbar", "starter")
    page.keyboard.press("Enter")
    page.wait_for_url("**q=starter**")
    actors = {a.strip() for a in page.locator("#result_list td.field-actor_name").all_inner_texts()}
    assert actors == {"starter"}
    events = page.locator("#result_list td.field-event").all_inner_texts()
    assert "run.created" in events


def test_the_admin_index_spells_webhook_deliveries(
    page_for: Any, django_user_model: Any, live_server: Any
) -> None:
    auditor = django_user_model.objects.create_superuser("auditor", "a@example.com", "x")
    page = page_for(auditor)
    page.goto(f"{live_server.url}/admin/")
    text = page.locator("#content-main").inner_text()
    assert "Webhook deliveries" in text
    assert "deliverys" not in text.lower()
