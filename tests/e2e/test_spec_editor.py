"""An author edits a spec in a real browser: an error shows on its line, is fixed, is saved."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from pipelines.models import PipelineVersion
from tests.e2e.pagecheck import serious_violations, sideways_scroll
from tests.web.conftest import gate_pipeline


def test_edit_see_the_error_on_its_line_fix_it_and_save(
    users: dict[str, Any], page_for: Any, live_server: Any
) -> None:
    gate_pipeline()
    page = page_for(users["boss"])
    page.goto(f"{live_server.url}/pipelines/gated/")

    # Open the editor from the keyboard.
    summary = page.locator("#edit > summary")
    summary.focus()
    page.keyboard.press("Enter")
    area = page.get_by_label("Spec of gated (YAML or JSON)")
    expect(area).to_be_visible()
    text = area.input_value()
    assert "assignee_role: reviewers" in text

    broken = text.replace("assignee_role: reviewers", "assignee_role: reviewers\n    quorum: 0")
    line = broken.splitlines().index("    quorum: 0") + 1
    area.fill(broken)
    problem = page.locator(f'#spec-errors li[data-line="{line}"]')
    expect(problem).to_contain_text("quorum")
    expect(problem).to_contain_text(f"Line {line}")
    expect(page.locator(f'#spec-gutter .gl.bad[data-line="{line}"]')).to_be_visible()
    assert page.locator("#spec-gutter .gl.bad").count() == 1

    # "Line N" puts the cursor on that line.
    problem.get_by_role("link").click()
    selected = area.evaluate("a => a.value.slice(a.selectionStart, a.selectionEnd)")
    assert selected == "    quorum: 0"

    # Fix it by typing over the selection.
    page.keyboard.type("    quorum: 2")
    expect(page.locator("#spec-check")).to_contain_text("Valid: 3 steps")
    expect(page.locator("#spec-gutter .gl.bad")).to_have_count(0)
    expect(page.locator("#spec-preview svg")).to_be_visible()

    page.get_by_role("button", name="Save as a new version").click()
    expect(page.locator(".messages")).to_contain_text("Version 2 of gated saved.")
    latest = PipelineVersion.objects.filter(pipeline__name="gated").order_by("-number").first()
    assert latest is not None
    assert latest.number == 2
    assert latest.spec["steps"][1]["config"]["quorum"] == 2
    assert latest.created_by == users["boss"]


def test_catalogue_and_editor_fit_a_phone_with_no_serious_axe_violations(
    users: dict[str, Any], page_for: Any, live_server: Any
) -> None:
    gate_pipeline()
    page = page_for(users["boss"])
    found = []
    for viewport in ({"width": 1280, "height": 900}, {"width": 390, "height": 800}):
        page.set_viewport_size(viewport)
        for path in ("/step-types/", "/pipelines/gated/"):
            page.goto(f"{live_server.url}{path}")
            if path.startswith("/pipelines/"):
                page.locator("#edit > summary").click()
                area = page.locator("#spec-text")
                area.fill(area.input_value().replace("type: noop", "type: nop", 1))
                expect(page.locator("#spec-errors li")).to_have_count(1)
            where = f"{path} at {viewport['width']}px"
            found += [f"{where}: {v}" for v in serious_violations(page, live_server.url)]
            if sideways_scroll(page):
                found.append(f"{where}: {sideways_scroll(page)}")
    assert not found, "\n".join(found)
