"""The insights page and its CSV, as operators, admins and those who may not see them."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from orgs.middleware import SESSION_KEY
from orgs.models import Membership

pytestmark = pytest.mark.django_db


def login(client: Any, user: Any, organization: str = "") -> Any:
    client.force_login(user)
    if organization:
        session = client.session
        session[SESSION_KEY] = organization
        session.save()
    return client


def rows_of(response: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_an_operator_sees_charts_and_tables_of_their_pipeline_only(client, users, insight_data):
    page = login(client, users["r1"]).get("/insights/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('role="img"') >= 5
    # One table per section, in the page's main part (the header's shortcuts dialog has its own).
    main = html[html.index("<main>") : html.index("</main>")]
    assert main.count("<table") == 9
    assert 'href="/insights/" class="active">Insights</a>' in html
    assert "gated" in html
    assert "private-pipe" not in html  # a pipeline r1 views but does not operate
    assert "acme" not in html.lower()


def test_a_member_who_operates_nothing_is_refused_and_offered_no_link(client, users, insight_data):
    for name in ("r2", "starter", "outsider"):
        c = login(client, users[name])
        assert c.get("/insights/").status_code == 403
        assert c.get("/insights/?format=csv&section=decision_time").status_code == 403
        assert "/insights/" not in c.get("/runs/").content.decode()


def test_an_operator_cannot_name_a_pipeline_they_do_not_operate(client, users, insight_data):
    c = login(client, users["r1"])
    for name in ("private-pipe", "no-such-pipeline"):
        response = c.get(f"/insights/?pipeline={name}")
        assert response.status_code == 400
        assert f"you operate no pipeline named &#x27;{name}&#x27;" in response.content.decode()
        csv_response = c.get(f"/insights/?pipeline={name}&format=csv&section=runs")
        assert csv_response.status_code == 400
        assert csv_response["Content-Type"].startswith("text/plain")


def test_another_organizations_admin_never_sees_this_one(client, users, insight_data):
    stranger = type(users["r1"]).objects.get(username="stranger")
    c = login(client, stranger, "default")  # asks for an organization it is not in
    assert c.get("/insights/?format=csv&section=time_by_pipeline").status_code == 403
    c = login(client, stranger, "acme")
    response = c.get("/insights/?format=csv&section=time_by_pipeline")
    assert response.status_code == 200  # its own organization, Acme
    rows = rows_of(response)
    assert [r["label"] for r in rows] == ["gated"]
    # Acme's own task (5 s; 5.5 from its bucket), not the default organization's.
    assert float(rows[0]["p50_s"]) == pytest.approx(5.0, rel=0.13)
    assert c.get("/insights/?pipeline=private-pipe").status_code == 400


def test_a_reviewer_of_two_organizations_sees_only_the_current_ones_pipelines(
    client, users, insight_data
):
    Membership.objects.create(
        user=users["r1"], organization=insight_data.acme, role=Membership.Role.MEMBER
    )
    c = login(client, users["r1"], "acme")
    assert c.get("/insights/").status_code == 403  # r1 operates nothing in Acme


def test_the_admin_downloads_each_section_as_csv(client, users, insight_data):
    c = login(client, users["boss"])
    response = c.get("/insights/?format=csv&section=time_by_pipeline")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith(
        'attachment; filename="firefly-time_by_pipeline-'
    )
    by_name = {r["label"]: r for r in rows_of(response)}
    gated = by_name["gated"]
    assert (gated["label"], gated["decided"]) == ("gated", "4")
    # percentile_cont of 60, 120, 300 and 3600 s, from the rollup's buckets (±13 %).
    assert float(gated["p50_s"]) == pytest.approx(210.0, rel=0.13)
    assert float(gated["p95_s"]) == pytest.approx(3105.0, rel=0.13)
    assert float(by_name["private-pipe"]["p50_s"]) == pytest.approx(7 * 86400.0, rel=0.13)
    histogram = rows_of(c.get("/insights/?format=csv&section=decision_time&pipeline=gated"))
    assert {r["bucket"]: r["decided"] for r in histogram}["1 to 5 min"] == "2"
    waiting = rows_of(c.get("/insights/?format=csv&section=waiting_on"))
    assert waiting == [
        {"who": "role: reviewers", "open": "2", "overdue": "1", "oldest_s": waiting[0]["oldest_s"]}
    ]
    days = rows_of(c.get("/insights/?format=csv&section=runs&from=2000-01-01&to=2000-01-03"))
    assert [r["day"] for r in days] == ["2000-01-01", "2000-01-02", "2000-01-03"]
    assert {r["total"] for r in days} == {"0"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=yesterday", "from: expected a date as YYYY-MM-DD, got &#x27;yesterday&#x27;"),
        ("to=2026-02-30", "to: expected a date as YYYY-MM-DD"),
        ("from=99999-01-01", "from: expected a date as YYYY-MM-DD"),
        ("from=2026-03-01&to=2026-02-01", "from: 2026-03-01 is after to: 2026-02-01."),
        ("from=2020-01-01&to=2026-01-01", "at most 366 days at a time"),
        ("format=pdf", "format: expected one of html, csv"),
        ("format=csv", "section: a CSV is of one section"),
        ("format=csv&section=passwords", "section: a CSV is of one section"),
        ("pipeline=%00", "you operate no pipeline named"),
    ],
)
def test_bad_filters_are_refused_with_a_clear_message(client, users, insight_data, query, message):
    response = login(client, users["boss"]).get(f"/insights/?{query}")
    assert response.status_code == 400
    text = response.content.decode()
    if "format=csv" in query:
        text = text.replace("'", "&#x27;")
    assert message in text


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get("/insights/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_the_page_works_on_an_empty_organization_for_its_admin(client, users):
    response = login(client, users["boss"]).get("/insights/")
    assert response.status_code == 200
    assert "Nothing in this range." in response.content.decode()
