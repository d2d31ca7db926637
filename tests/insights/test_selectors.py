"""The insights' aggregates on a small known data set: counts, buckets and percentiles."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from approvals import rollup
from insights import selectors
from orgs.models import Organization


def scope_for(user: Any, data: Any, pipeline: str = "", days: int = 30) -> selectors.Scope:
    org = Organization.objects.default()
    return selectors.scope(
        user,
        org,
        pipelines=selectors.operated_pipelines(user, org),
        pipeline=pipeline,
        start=data.now - timedelta(days=days),
        end=data.now + timedelta(minutes=1),
        now=data.now,
    )


@pytest.mark.django_db
def test_an_operator_sees_the_time_to_decision_of_their_pipeline(users, insight_data):
    s = scope_for(users["r1"], insight_data)
    assert set(s.pipelines.values()) == {"gated"}
    counts = dict(selectors.decision_time(s))
    assert counts == {
        "under 1 min": 0,
        "1 to 5 min": 2,  # 60 s and 120 s
        "5 to 15 min": 1,  # 300 s
        "15 to 60 min": 0,
        "1 to 4 h": 1,  # 3600 s
        "4 to 24 h": 0,
        "1 to 3 days": 0,
        "over 3 days": 0,
    }


@pytest.mark.django_db
def test_percentiles_are_percentile_cont_within_the_buckets_precision(users, insight_data):
    s = scope_for(users["r1"], insight_data)
    # 60, 120, 300, 3600: percentile_cont gives p50 210 (halfway between 120 and 300) and
    # p95 3105 (2.85 of 3 ranks); from the rollup's buckets, within their precision.
    near = rollup.PRECISION_PCT / 100
    for by, label in (
        ("pipeline", "gated"),
        ("step", "gated · review"),
        ("role", "role: reviewers"),
    ):
        (row,) = selectors.decision_percentiles(s, by)
        assert (row["label"], row["decided"]) == (label, 4)
        assert row["p50_s"] == pytest.approx(210.0, rel=near)
        assert row["p95_s"] == pytest.approx(3105.0, rel=near)


@pytest.mark.django_db
def test_open_tasks_deadlines_and_who_is_waited_on(users, insight_data):
    s = scope_for(users["r1"], insight_data)
    assert dict(selectors.open_by_age(s))["1 to 4 h"] == 1
    assert sum(n for _, n in selectors.open_by_age(s)) == 1
    # Due in the range and passed: 300 s decided after a 100 s deadline (missed), 3600 s
    # within 7200 s (met), the open one an hour past its deadline (missed).
    assert selectors.deadlines(s) == [
        {"pipeline": "gated", "due": 3, "met": 1, "missed": 2, "missed_pct": 66.7}
    ]
    (waited_on,) = selectors.waiting_on(s)
    assert waited_on["who"] == "role: reviewers"
    assert (waited_on["open"], waited_on["overdue"]) == (1, 1)
    assert waited_on["oldest_s"] == pytest.approx(7200, abs=1)


@pytest.mark.django_db
def test_decisions_and_runs_per_day(users, insight_data):
    s = scope_for(users["r1"], insight_data)
    day = (insight_data.now - timedelta(days=2)).date()
    rates = {row["day"]: row for row in selectors.decision_rates(s)}
    assert len(rates) == len(s.days)
    assert (rates[day]["approve"], rates[day]["reject"], rates[day]["total"]) == (3, 1, 4)
    assert (rates[day]["approve_pct"], rates[day]["reject_pct"]) == (75.0, 25.0)
    assert sum(row["total"] for row in rates.values()) == 4
    runs = {row["day"]: row for row in selectors.runs_per_day(s)}
    assert (runs[day]["succeeded"], runs[day]["rejected"]) == (3, 1)
    assert sum(row["total"] for row in runs.values()) == 4


@pytest.mark.django_db
def test_an_admin_sees_every_pipeline_of_the_organization_and_no_other(users, insight_data):
    s = scope_for(users["boss"], insight_data)
    assert s.whole_organization
    labels = {r["label"]: r for r in selectors.decision_percentiles(s, "pipeline")}
    assert set(labels) == {"gated", "private-pipe"}
    assert labels["private-pipe"]["p50_s"] == pytest.approx(7 * 86400, rel=0.13)
    assert sum(n for _, n in selectors.open_by_age(s)) == 2
    # Acme's task (5 s, approved two days ago) counts nowhere here.
    assert dict(selectors.decision_time(s))["under 1 min"] == 0
    assert sum(r["total"] for r in selectors.decision_rates(s)) == 5


@pytest.mark.django_db
def test_a_range_and_a_pipeline_narrow_the_figures(users, insight_data):
    s = scope_for(users["boss"], insight_data, pipeline="private-pipe")
    assert set(s.pipelines.values()) == {"private-pipe"}
    assert not s.whole_organization
    assert [r["label"] for r in selectors.decision_percentiles(s, "pipeline")] == ["private-pipe"]
    assert sum(r["open"] for r in selectors.waiting_on(s)) == 1
    # One day: two days ago is outside it.
    s = scope_for(users["boss"], insight_data, days=1)
    assert selectors.decision_percentiles(s, "pipeline") == []


@pytest.mark.django_db
def test_a_plain_member_operates_nothing(users, insight_data):
    org = Organization.objects.default()
    for name in ("r2", "r3", "outsider", "starter"):
        assert selectors.operated_pipelines(users[name], org) == {}
        assert not selectors.may_see(users[name], org)
    assert selectors.may_see(users["r1"], org)
    assert selectors.may_see(users["boss"], org)
