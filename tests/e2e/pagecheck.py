"""What every browser test checks on a page: axe-core, a phone's width, keyboard focus."""

from __future__ import annotations

import json

from playwright.sync_api import Page

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
# axe's impacts are minor, moderate, serious and critical; the last two fail a test.
FAILING_IMPACTS = {"serious", "critical"}


def tab_to(page: Page, selector: str, limit: int = 80) -> None:
    """Press Tab until the element matching `selector` has the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} not reached in {limit} presses of Tab")


def focus_is_visible(page: Page) -> bool:
    """The focused element matches :focus-visible and draws an outline or a shadow."""
    return bool(
        page.evaluate(
            """() => {
              const el = document.activeElement;
              const style = getComputedStyle(el);
              const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
              return el.matches(":focus-visible") && (outline || style.boxShadow !== "none");
            }"""
        )
    )


# Elements past the window's right edge that no scrolling box of their own holds.
WIDER_THAN_THE_WINDOW = """() => [...document.querySelectorAll("body *")]
  .filter(el => el.getBoundingClientRect().right > window.innerWidth)
  .filter(el => !el.parentElement.closest(".table-wrap, .dag-wrap, pre"))
  .map(el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : ""))
  .slice(-8)"""


def sideways_scroll(page: Page) -> str:
    """Why the page scrolls sideways, or "" when it does not."""
    scroll, width = page.evaluate("() => [document.scrollingElement.scrollWidth, innerWidth]")
    if scroll <= width:
        return ""
    return f"scrolls sideways ({scroll} > {width}): {page.evaluate(WIDER_THAN_THE_WINDOW)}"


def serious_violations(page: Page, origin: str) -> list[str]:
    """Run axe-core on the page; its serious and critical violations, one line each."""
    # From our own origin, as the Content-Security-Policy allows (it refuses inline scripts).
    page.add_script_tag(url=f"{origin}/static/vendor/axe.min.js")
    found = page.evaluate(
        'async () => (await axe.run(document, {resultTypes: ["violations"]})).violations'
    )
    return [
        f"{v['id']} ({v['impact']}): " + json.dumps([node["target"] for node in v["nodes"]])
        for v in found
        if v["impact"] in FAILING_IMPACTS
    ]
