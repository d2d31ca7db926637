"""The organization pages in a real browser: keyboard only, a phone's width, and axe-core."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from approvals.models import HumanTask
from orgs.models import Membership, Organization
from pipelines import services
from pipelines.models import PipelineGrant
from tests.approvals.conftest import drive, open_task
from tests.e2e.pagecheck import (
    DESKTOP,
    PHONE,
    focus_is_visible,
    serious_violations,
    sideways_scroll,
    tab_to,
)


def gated_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"name": "build", "type": "noop"},
            {
                "name": "review",
                "type": "approval",
                "after": ["build"],
                "config": {"assignee": "dave", "instructions": "Check the build."},
            },
        ],
    }


@pytest.fixture
def world(transactional_db: Any, django_user_model: Any) -> dict[str, Any]:
    """Acme and Globex, each with a pipeline "release" and a run of it waiting for dave.

    alice administers Acme, dave is a plain member of both, and erin belongs to no
    organization yet."""
    acme = Organization.objects.create(slug="acme", name="Acme Corp")
    globex = Organization.objects.create(slug="globex", name="Globex Inc")
    users = {
        name: django_user_model.objects.create_user(name, password="x")
        for name in ("alice", "dave", "erin")
    }
    for name, org, role in (
        ("alice", acme, Membership.Role.ADMIN),
        ("dave", acme, Membership.Role.MEMBER),
        ("dave", globex, Membership.Role.MEMBER),
    ):
        Membership.objects.create(user=users[name], organization=org, role=role)
    made: dict[str, Any] = {"acme": acme, "globex": globex, **users}
    for org, version in ((acme, "acme-1.0"), (globex, "globex-2.0")):
        services.pipeline_create(spec=gated_spec("release"), organization=org, member_role="viewer")
        run = services.run_start(pipeline="release", inputs={"version": version}, organization=org)
        made[f"{org.slug}_run"] = drive(run)
        made[f"{org.slug}_task"] = open_task(run)
    return made


def in_organization(page: Page, name: str) -> None:
    """Make the page act in the named organization, through the header's switcher."""
    switcher = page.locator("#org-switch-select")
    if switcher.evaluate("s => s.options[s.selectedIndex].text") != name:
        switcher.select_option(label=name)
        page.get_by_role("button", name="Switch").click()
    expect(switcher.locator("option:checked")).to_have_text(name)


def test_an_admin_reads_every_section_of_the_organization_page_on_a_phone(
    world, page_for, live_server
):
    page = page_for(world["alice"])
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/org/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Acme Corp")
    assert not sideways_scroll(page), sideways_scroll(page)
    for section in ("members", "pipelines", "webhooks", "tokens"):
        located = page.locator(f"section#{section}")
        located.scroll_into_view_if_needed()
        expect(located).to_be_in_viewport()
        box = located.bounding_box()
        assert box is not None
        assert box["x"] >= 0, (section, box)
        assert box["x"] + box["width"] <= PHONE["width"], (section, box)
    # Wide tables scroll inside their own box, never the page.
    assert not sideways_scroll(page), sideways_scroll(page)


def test_a_member_of_two_organizations_switches_with_the_keyboard_only(
    world, page_for, live_server
):
    page = page_for(world["dave"])
    page.goto(f"{live_server.url}/runs/")
    in_organization(page, "Acme Corp")
    page.goto(f"{live_server.url}/runs/")
    runs = page.locator("#runs")
    expect(runs.locator(f"a[href='/runs/{world['acme_run'].pk}/']")).to_have_count(1)
    expect(runs.locator(f"a[href='/runs/{world['globex_run'].pk}/']")).to_have_count(0)

    tab_to(page, "#org-switch-select")
    assert focus_is_visible(page), "no visible focus on the organization switcher"
    # A closed select takes typed letters: "G" picks Globex Inc.
    page.keyboard.type("G")
    expect(page.locator("#org-switch-select")).to_have_value("globex")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Switch"
    assert focus_is_visible(page), "no visible focus on the Switch button"
    page.keyboard.press("Enter")

    expect(page.locator("[role=status]")).to_contain_text("Now in Globex Inc.")
    expect(page).to_have_url(f"{live_server.url}/runs/")
    expect(page.locator("#org-switch-select option:checked")).to_have_text("Globex Inc")
    expect(runs.locator(f"a[href='/runs/{world['globex_run'].pk}/']")).to_have_count(1)
    expect(runs.locator(f"a[href='/runs/{world['acme_run'].pk}/']")).to_have_count(0)
    # In Globex, Acme's run does not exist.
    acme_run = page.goto(f"{live_server.url}/runs/{world['acme_run'].pk}/")
    assert acme_run is not None
    assert acme_run.status == 404


def test_an_admin_adds_a_member_and_grants_a_role_with_the_keyboard_only(
    world, page_for, live_server
):
    page = page_for(world["alice"])
    page.goto(f"{live_server.url}/org/")

    tab_to(page, "#add-username")
    page.keyboard.type("erin")
    page.keyboard.press("Tab")
    page.keyboard.type("au")  # the role select: "author"
    expect(page.locator("#add-role")).to_have_value("author")
    page.keyboard.press("Tab")
    assert focus_is_visible(page), "no visible focus on the Add button"
    page.keyboard.press("Enter")

    expect(page.locator("[role=status]")).to_contain_text("erin added as author.")
    expect(page.locator("#members tbody")).to_contain_text("erin")
    assert Membership.objects.get(user=world["erin"], organization=world["acme"]).role == "author"

    pipeline = world["acme_run"].pipeline_version.pipeline
    tab_to(page, f"#grant-name-{pipeline.pk}")
    page.keyboard.type("erin")
    page.keyboard.press("Tab")
    page.keyboard.type("o")  # the grant's role: "operator"
    expect(page.locator(f"#grant-role-{pipeline.pk}")).to_have_value("operator")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")

    expect(page.locator("[role=status]")).to_contain_text("erin is now operator of that pipeline.")
    expect(page.locator(f"#pipeline-{pipeline.pk} .grants")).to_contain_text("erin: operator")
    grant = PipelineGrant.objects.get(pipeline=pipeline, user=world["erin"])
    assert grant.role == "operator"


def test_no_serious_accessibility_violations_nor_sideways_scrolling(world, page_for, live_server):
    alice, dave = page_for(world["alice"]), page_for(world["dave"])
    in_organization(dave, "Acme Corp")
    run, task = world["acme_run"], world["acme_task"]
    assert task.status == HumanTask.Status.OPEN
    visits = [
        (alice, "/org/"),  # the admin's view
        (dave, "/org/"),  # a plain member's view, with the switcher
        (dave, "/"),
        (dave, "/runs/"),
        (dave, f"/runs/{run.pk}/"),
        (dave, f"/tasks/{task.pk}/"),
        (alice, f"/tasks/{task.pk}/"),  # with the reassign form
        (dave, "/?view=unassigned&q=nothing"),
        (dave, "/decided/"),
    ]
    found = []
    for viewport in (DESKTOP, PHONE):
        for page, path in visits:
            page.set_viewport_size(viewport)
            page.goto(f"{live_server.url}{path}")
            expect(page.locator("main")).to_be_visible()
            where = f"{path} at {viewport['width']}px"
            found += [f"{where}: {v}" for v in serious_violations(page, live_server.url)]
            if sideways_scroll(page):
                found.append(f"{where}: {sideways_scroll(page)}")
    assert not found, "\n".join(found)
