"""The inbox's views (for me, claimed by me, unassigned, all I may decide), its search
by run inputs, and the archive of one's own decisions."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from approvals import services as approvals
from approvals.models import HumanTask
from orgs.middleware import SESSION_KEY
from orgs.models import Membership, Organization
from pipelines import services
from tests.approvals.conftest import drive, open_task
from tests.web.conftest import gate_pipeline

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
VIEWS = ("mine", "claimed", "unassigned", "all")


NAMES = iter(range(1, 10_000))


def task_for(starter: Any, version: str, **config: Any) -> HumanTask:
    name = f"gated-{next(NAMES)}"
    gate_pipeline(name, **config)
    return open_task(
        drive(services.run_start(pipeline=name, inputs={"version": version}, actor=starter))
    )


def listed(client: Any, **query: str) -> str:
    response = client.get("/", query)
    assert response.status_code == 200
    return response.content.decode()


def has(page: str, task: HumanTask) -> bool:
    return reverse("task", args=[task.pk]) in page


@pytest.fixture
def queue(users: dict[str, Any]) -> dict[str, HumanTask]:
    """Four open tasks for the reviewers role: one claimed by r1, one by r2, one left
    alone, and one assigned to r2 in person (and the role)."""
    tasks = {
        "mine_claimed": task_for(users["starter"], "1.0"),
        "r2_claimed": task_for(users["starter"], "2.0"),
        "free": task_for(users["starter"], "3.0"),
        "for_r2": task_for(users["starter"], "4.0", assignee="r2"),
    }
    approvals.task_claim(task_id=tasks["mine_claimed"].pk, user=users["r1"])
    approvals.task_claim(task_id=tasks["r2_claimed"].pk, user=users["r2"])
    return tasks


def test_each_view_lists_its_tasks(client, users, queue):
    client.force_login(users["r1"])
    expected = {
        # Mine: what r1 may decide that nobody else holds.
        "mine": {"mine_claimed", "free", "for_r2"},
        "claimed": {"mine_claimed"},
        # Unassigned: for r1's role, no person named, no claim.
        "unassigned": {"free"},
        "all": {"mine_claimed", "r2_claimed", "free", "for_r2"},
    }
    for view, names in expected.items():
        page = listed(client, view=view)
        shown = {name for name, task in queue.items() if has(page, task)}
        assert shown == names, view
    default = listed(client)
    assert {n for n, t in queue.items() if has(default, t)} == expected["mine"]
    # An unknown view is the default one, not an error.
    assert {n for n, t in queue.items() if has(listed(client, view="x' OR 1=1"), t)} == (
        expected["mine"]
    )
    # The nav's count is the default view's.
    assert client.get(reverse("inbox-count")).content == b"3"


def test_the_views_are_links_and_mark_the_current_one(client, users, queue):
    client.force_login(users["r1"])
    page = listed(client, view="claimed", kind="approval", page="1")
    assert '<nav class="tabs" id="inbox-tabs" aria-label="Inbox views">' in page
    assert page.count('aria-current="page"') == 1
    assert 'href="?view=claimed&amp;kind=approval" aria-current="page"' in page.replace(
        "kind=approval&amp;view=claimed", "view=claimed&amp;kind=approval"
    )
    for label in ("For me", "Claimed by me", "Unassigned", "All I may decide"):
        assert f">{label}</a>" in page


def test_an_outsider_sees_nothing_in_any_view(client, users, queue):
    client.force_login(users["outsider"])
    for view in VIEWS:
        page = listed(client, view=view)
        assert not any(has(page, task) for task in queue.values()), view


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("rows", [1, 20])
def test_view_queries_do_not_grow(client, users, django_assert_max_num_queries, rows, view):
    gate_pipeline()
    for index in range(rows):
        run = services.run_start(
            pipeline="gated", inputs={"version": f"9.{index}"}, actor=users["starter"]
        )
        drive(run)
    if view == "claimed":
        for task in HumanTask.objects.filter(status=HumanTask.Status.OPEN):
            approvals.task_claim(task_id=task.pk, user=users["r1"])
    client.force_login(users["r1"])
    # As the default inbox: session, user, page count, tasks, their runs' pipelines by
    # key, pipeline names, memberships, row-level security's enter and leave; and the nav
    # badge's count, taken in the same request; whether the nav offers Insights (r1 is no
    # admin: one query).
    with django_assert_max_num_queries(11):
        response = client.get("/", {"view": view, "q": "9."})
    assert response.content.decode().count('class="button small"') == rows
    with django_assert_max_num_queries(11):
        response = client.get("/", {"view": view})
    assert response.content.decode().count('class="button small"') == rows


# --- search -----------------------------------------------------------------------------


def test_search_finds_tasks_by_their_run_inputs(client, users):
    wanted = task_for(users["starter"], "Release-ACME-7")
    other = task_for(users["starter"], "1.0")
    client.force_login(users["r1"])
    page = listed(client, q="acme-7")
    assert has(page, wanted)
    assert not has(page, other)
    assert 'value="acme-7"' in page
    fragment = client.get("/", {"q": "nothing-like-it"}, **HX).content.decode()
    assert "No open task here has run inputs containing “nothing-like-it”." in fragment
    # Search within a view: r1 claims nothing, so "claimed" finds nothing.
    assert not has(listed(client, q="acme-7", view="claimed"), wanted)


def test_like_wildcards_match_only_themselves(client, users):
    percent = task_for(users["starter"], "50%")
    underscore = task_for(users["starter"], "a_b")
    plain = task_for(users["starter"], "axb")
    client.force_login(users["r1"])
    page = listed(client, q="%")
    assert has(page, percent)
    assert not has(page, plain)
    assert not has(page, underscore)
    page = listed(client, q="a_b")
    assert has(page, underscore)
    assert not has(page, plain)
    page = listed(client, q="\\")
    assert not any(has(page, t) for t in (percent, underscore, plain))


@pytest.mark.parametrize(
    "term", ["x" * 5000, "\x00", "a\x00b", "'; DROP TABLE approvals_humantask; --", "{}", '"', "é☃"]
)
def test_odd_search_terms_never_fail(client, users, term):
    task = task_for(users["starter"], "1.0")
    client.force_login(users["r1"])
    for view in VIEWS:
        response = client.get("/", {"q": term, "view": view})
        assert response.status_code == 200
    assert HumanTask.objects.filter(pk=task.pk, status=HumanTask.Status.OPEN).exists()


def test_a_long_term_is_cut_and_says_so(client, users):
    task = task_for(users["starter"], "1.0")
    client.force_login(users["r1"])
    page = listed(client, q="1.0" + " " * 10 + "y" * 200)
    assert "Searches take at most 100 characters" in page
    assert not has(page, task)


def other_organization(users: dict[str, Any], version: str) -> tuple[Organization, HumanTask]:
    """Globex, where r1 is also a reviewer (groups span organizations), with a task whose
    run inputs hold `version`."""
    globex = Organization.objects.create(slug="globex", name="Globex")
    for name in ("starter", "r1"):
        Membership.objects.create(user=users[name], organization=globex, role="member")
    spec = {
        "name": "gated",
        "steps": [
            {"name": "build", "type": "noop"},
            {
                "name": "review",
                "type": "approval",
                "after": ["build"],
                "config": {"assignee_role": "reviewers"},
            },
        ],
    }
    services.pipeline_create(spec=spec, organization=globex, member_role="starter")
    # Read again: the user objects remember their memberships from before.
    starter = type(users["starter"]).objects.get(pk=users["starter"].pk)
    run = services.run_start(
        pipeline="gated", inputs={"version": version}, actor=starter, organization=globex
    )
    return globex, open_task(drive(run))


def test_search_never_finds_another_organizations_task(client, users):
    ours = task_for(users["starter"], "secret-globex-1")
    globex, theirs = other_organization(users, "secret-globex-2")
    client.force_login(users["r1"])
    for view in VIEWS:
        page = listed(client, q="secret-globex", view=view)
        assert has(page, ours) == (view != "claimed"), view
        assert not has(page, theirs), view
    # Switched to Globex, r1 finds Globex's and not ours.
    session = client.session
    session[SESSION_KEY] = globex.slug
    session.save()
    page = listed(client, q="secret-globex", view="all")
    assert has(page, theirs)
    assert not has(page, ours)


# --- the archive ------------------------------------------------------------------------


def test_the_archive_lists_my_decisions_newest_first(client, users):
    first = task_for(users["starter"], "1.0")
    second = task_for(users["starter"], "2.0")
    someone_elses = task_for(users["starter"], "3.0")
    approvals.task_approve(task_id=first.pk, user=users["r1"], comment="looks fine")
    approvals.task_reject(task_id=second.pk, user=users["r1"], comment="broken <b>build</b>")
    approvals.task_approve(task_id=someone_elses.pk, user=users["r2"], comment="r2's call")
    client.force_login(users["r1"])
    response = client.get(reverse("archive"))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="/decided/" class="active"' in page
    assert "looks fine" in page
    assert "broken &lt;b&gt;build&lt;/b&gt;" in page
    assert "r2&#x27;s call" not in page
    assert "r2's call" not in page
    assert page.index("broken &lt;b&gt;") < page.index("looks fine")  # newest first
    assert reverse("task", args=[first.pk]) in page
    assert reverse("run", args=[second.run_id]) in page
    assert reverse("task", args=[someone_elses.pk]) not in page
    assert first.run.pipeline_version.pipeline.name in page
    assert ">reject</span>" in page


def test_the_archive_is_paginated(client, users, monkeypatch):
    from approvals import views

    monkeypatch.setattr(views, "ARCHIVE_PAGE_SIZE", 2)
    for index in range(3):
        task = task_for(users["starter"], f"{index}.0")
        approvals.task_approve(task_id=task.pk, user=users["r1"])
    client.force_login(users["r1"])
    first = client.get(reverse("archive")).content.decode()
    assert first.count('class="pill act-approve"') == 2
    assert "page 1 of 2" in first
    second = client.get(reverse("archive"), {"page": "2"}).content.decode()
    assert second.count('class="pill act-approve"') == 1
    assert client.get(reverse("archive"), {"page": "zzz"}).status_code == 200


def test_the_archive_keeps_to_the_organization(client, users):
    ours = task_for(users["starter"], "1.0")
    approvals.task_approve(task_id=ours.pk, user=users["r1"], comment="acme-side")
    globex, theirs = other_organization(users, "2.0")
    r1 = type(users["r1"]).objects.get(pk=users["r1"].pk)
    approvals.task_approve(task_id=theirs.pk, user=r1, comment="globex-side")
    client.force_login(users["r1"])
    page = client.get(reverse("archive")).content.decode()
    assert "acme-side" in page
    assert "globex-side" not in page
    session = client.session
    session[SESSION_KEY] = globex.slug
    session.save()
    page = client.get(reverse("archive")).content.decode()
    assert "globex-side" in page
    assert "acme-side" not in page
    client.force_login(users["outsider"])
    assert "No decisions yet." in client.get(reverse("archive")).content.decode()


@pytest.mark.parametrize("rows", [1, 20])
def test_archive_queries_do_not_grow(client, users, django_assert_max_num_queries, rows):
    gate_pipeline()
    for index in range(rows):
        run = drive(
            services.run_start(
                pipeline="gated", inputs={"version": f"{index}"}, actor=users["starter"]
            )
        )
        approvals.task_approve(task_id=open_task(run).pk, user=users["r1"])
    client.force_login(users["r1"])
    # session, user, memberships, row-level security's enter and leave, count, decisions,
    # their tasks with their pipelines (by key), the nav's insights link.
    with django_assert_max_num_queries(9):
        response = client.get(reverse("archive"))
    assert response.content.decode().count('class="pill act-approve"') == rows


def test_a_change_of_filters_brings_the_views_with_the_new_filters(client, users, queue):
    client.force_login(users["r1"])
    changed = client.get(
        "/", {"view": "all", "q": "2.0"}, HTTP_HX_TRIGGER="inbox-filters", **HX
    ).content.decode()
    assert 'id="inbox-tabs" aria-label="Inbox views" hx-swap-oob="true"' in changed
    assert 'href="?view=unassigned&amp;q=2.0"' in changed
    # The 5 s refresh leaves the views (and the focus on them) alone.
    assert "inbox-tabs" not in client.get("/", {"view": "all"}, **HX).content.decode()
