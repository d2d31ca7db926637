"""The insights page in a browser: charts with their tables, a CSV download, a phone's width."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.pagecheck import PHONE, serious_violations, sideways_scroll
from tests.insights.conftest import known_data


@pytest.fixture
def insight_data(users: Any) -> Any:
    return known_data(users)


def test_an_admin_reads_the_charts_and_downloads_a_section(
    users, insight_data, page_for, live_server
):
    page = page_for(users["boss"])
    page.get_by_role("link", name="Insights").click()
    expect(page.get_by_role("heading", name="Insights", level=1)).to_be_visible()
    charts = page.locator('svg.chart[role="img"]')
    expect(charts.first).to_be_visible()
    assert charts.count() >= 7
    for label in charts.evaluate_all("els => els.map(e => e.getAttribute('aria-label'))"):
        assert label
    section = page.locator("#time_by_pipeline")
    expect(
        section.get_by_role("region", name="Table: Time to decision by pipeline")
    ).to_contain_text("gated")
    expect(section.locator("table")).to_contain_text("3 min")  # p50 of 210 s (234.5 s here)
    expect(section).to_contain_text("approximate, from buckets of ±13 %")

    with page.expect_download() as download:
        section.get_by_role("link", name="CSV of Time to decision by pipeline").click()
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0] == "label,decided,p50_s,p95_s"
    # percentile_cont of 60, 120, 300 and 3600 s is 210 and 3105; from the rollup's buckets.
    assert "gated,4,234.5,3485.0" in text

    assert serious_violations(page, live_server.url) == []
    page.set_viewport_size(PHONE)
    page.reload()
    expect(charts.first).to_be_visible()
    assert sideways_scroll(page) == ""
    assert serious_violations(page, live_server.url) == []


def test_a_bad_range_is_explained_and_a_reviewer_is_offered_no_insights(
    users, insight_data, page_for, live_server
):
    page = page_for(users["boss"])
    page.goto(f"{live_server.url}/insights/?from=2026-03-01&to=2026-02-01")
    expect(page.get_by_role("alert")).to_contain_text("is after to")

    reviewer = page_for(users["r2"])
    expect(reviewer.get_by_role("link", name="Insights")).to_have_count(0)
    response = reviewer.goto(f"{live_server.url}/insights/")
    assert response is not None
    assert response.status == 403
