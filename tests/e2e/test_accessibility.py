"""Every page as its user, at a desktop's and a phone's width: axe-core, no sideways scroll."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, FloatRect, Locator, Page, ViewportSize

from approvals import services as approvals
from approvals.models import HumanTask
from pipelines import services
from pipelines.models import Run
from tests.approvals.conftest import drive, open_task
from tests.e2e.pagecheck import DESKTOP, PHONE, serious_violations, sideways_scroll

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

RELEASE = {
    "name": "release",
    "description": "Build, check and ship a release to production.",
    "input_schema": {
        "type": "object",
        "required": ["version"],
        "properties": {
            "version": {"type": "string", "minLength": 1, "title": "Version"},
            "notes": {"type": "string", "title": "Release notes"},
        },
    },
    "steps": [
        {"name": "build", "type": "noop"},
        {"name": "unit-tests", "type": "noop", "after": ["build"]},
        {"name": "security-scan", "type": "noop", "after": ["build"]},
        {
            "name": "sign-off",
            "type": "approval",
            "after": ["unit-tests", "security-scan"],
            "config": {
                "assignee_role": "reviewers",
                "instructions": "Check the changelog and the scan report, then approve.",
                "timeout_hours": 24,
            },
        },
        {"name": "deploy", "type": "noop", "after": ["sign-off"]},
    ],
}

NOTES = {
    "name": "release-notes",
    "steps": [
        {
            "name": "write-notes",
            "type": "input",
            "config": {
                "assignee_role": "reviewers",
                "instructions": "Write the customer-facing notes.",
                "form_schema": {
                    "type": "object",
                    "required": ["title"],
                    "properties": {
                        "title": {"type": "string", "title": "Title", "minLength": 3},
                        "words": {"type": "integer", "title": "Words", "minimum": 1},
                        "public": {"type": "boolean", "title": "Public"},
                    },
                },
            },
        }
    ],
}

CHANNEL = {
    "name": "rollout-channel",
    "steps": [
        {
            "name": "pick-channel",
            "type": "choice",
            "config": {"assignee_role": "reviewers", "options": ["canary", "staged", "everyone"]},
        }
    ],
}

DEPLOY = {
    "name": "deploy-check",
    "steps": [{"name": "check", "type": "approval", "config": {"assignee_role": "reviewers"}}],
}

ROLLOUT = {
    "name": "rollout",
    "steps": [
        {"name": "prepare", "type": "noop"},
        {
            "name": "hand-to-deploy",
            "type": "handoff",
            "after": ["prepare"],
            "config": {"pipeline": "deploy-check", "wait": True},
        },
    ],
}


@pytest.fixture
def day(users: dict[str, Any]) -> dict[str, Any]:
    """A reviewer's day: tasks of every kind open, one decided, runs in several states."""
    for spec in (RELEASE, NOTES, CHANNEL, DEPLOY, ROLLOUT):
        services.pipeline_create(spec=spec, member_role="starter")
    starter = users["starter"]
    runs = [
        drive(
            services.run_start(
                pipeline="release",
                inputs={"version": f"2.{minor}.0", "notes": "Faster start-up; a fix for a crash."},
                actor=starter,
            )
        )
        for minor in range(4)
    ]
    decided = open_task(runs[0])
    approvals.task_approve(task_id=decided.pk, user=users["r1"], comment="Changelog reads well.")
    done = drive(runs[0])
    form = open_task(drive(services.run_start(pipeline="release-notes", inputs={}, actor=starter)))
    choice = open_task(
        drive(services.run_start(pipeline="rollout-channel", inputs={}, actor=starter))
    )
    parent = drive(services.run_start(pipeline="rollout", inputs={}, actor=starter))
    child = Run.objects.get(parent=parent)
    handoff = open_task(drive(child))
    approval = open_task(runs[1])
    return {
        "users": users,
        "approval": approval,
        "form": form,
        "choice": choice,
        "handoff": handoff,
        "done": done,
        "waiting": runs[1],
        "parent": parent,
    }


def pages(day: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """(what, who, path): every page a reviewer, a starter or an admin opens."""
    approval, waiting = day["approval"].pk, day["waiting"].pk
    return [
        ("login", None, "/login/"),
        ("inbox", "r1", "/"),
        ("inbox claimed", "r1", "/?view=claimed"),
        ("inbox unassigned", "r1", "/?view=unassigned"),
        ("inbox all", "r1", "/?view=all&q=2.1"),
        ("inbox empty", "outsider", "/"),
        ("decided", "r1", "/decided/"),
        ("approval task", "r2", f"/tasks/{approval}/"),
        ("form task", "r1", f"/tasks/{day['form'].pk}/"),
        ("choice task", "r1", f"/tasks/{day['choice'].pk}/"),
        ("handoff task", "r1", f"/tasks/{day['handoff'].pk}/"),
        ("task as its starter", "starter", f"/tasks/{approval}/"),
        ("reassign", "boss", f"/tasks/{approval}/"),
        ("decided task", "r1", f"/tasks/{HumanTask.objects.get(run=day['done']).pk}/"),
        ("runs", "starter", "/runs/"),
        ("waiting run", "starter", f"/runs/{waiting}/"),
        ("finished run", "starter", f"/runs/{day['done'].pk}/"),
        ("handoff run", "starter", f"/runs/{day['parent'].pk}/"),
        ("pipelines", "boss", "/pipelines/"),
        ("pipeline", "boss", "/pipelines/release/"),
        ("step types", "r1", "/step-types/"),
        ("organization", "boss", "/org/"),
        ("organization as a member", "r1", "/org/"),
        # A member who is no author of the pipeline sends its editor's form anyway.
        ("403", "r1", "POST /pipelines/release/edit/"),
        ("404", "r1", "/runs/999999/"),
    ]


def size(viewport: dict[str, int]) -> ViewportSize:
    return ViewportSize(width=viewport["width"], height=viewport["height"])


def log_in(browser: Browser, origin: str, user: Any, viewport: dict[str, int]) -> Page:
    page = browser.new_context(viewport=size(viewport)).new_page()
    page.set_default_timeout(15_000)
    if user is not None:
        page.goto(f"{origin}/login/")
        page.fill("input[name=username]", user.get_username())
        page.fill("input[name=password]", "x")
        page.click("button[type=submit]")
        page.wait_for_url(f"{origin}/")
    return page


def visit(page: Page, origin: str, path: str) -> None:
    if not path.startswith("POST "):
        page.goto(f"{origin}{path}")
        return
    page.goto(f"{origin}/")
    with page.expect_navigation() as answer:
        page.evaluate(POST_A_FORM, f"{origin}{path.removeprefix('POST ')}")
    assert answer.value.status == 403


# A plain form as a browser without htmx would send it, with the page's CSRF token.
POST_A_FORM = """action => {
  const form = Object.assign(document.createElement("form"), {method: "post", action});
  const token = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"];
  const field = {name: "csrfmiddlewaretoken", value: token};
  form.append(Object.assign(document.createElement("input"), field));
  document.body.append(form);
  form.submit();
}"""

# Open what a reader would open (the spec editor, every output), then let the page's
# script see the boxes that now scroll.
OPEN_EVERYTHING = """async () => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  await new Promise(done => setTimeout(done, 50));
}"""

# Where the header's parts lie: all of them inside the header and the window.
OUTSIDE_THE_TOP_BAR = """() => {
  const bar = document.querySelector("header.topbar").getBoundingClientRect();
  const parts = "header.topbar a, header.topbar button, header.topbar select";
  return [...document.querySelectorAll(parts)]
    .filter(el => {
      const box = el.getBoundingClientRect();
      return box.left < bar.left || box.right > Math.min(bar.right, innerWidth)
        || box.top < bar.top || box.bottom > bar.bottom;
    })
    .map(el => el.textContent.trim() || el.tagName);
}"""


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_page_passes_axe_and_fits_the_window(
    day: dict[str, Any], browser: Browser, live_server: Any, viewport: dict[str, int]
) -> None:
    problems = []
    sessions: dict[str | None, Page] = {}
    for what, who, path in pages(day):
        if who not in sessions:
            user = day["users"][who] if who else None
            sessions[who] = log_in(browser, live_server.url, user, viewport)
        page = sessions[who]
        visit(page, live_server.url, path)
        page.evaluate(OPEN_EVERYTHING)
        outside = page.evaluate(OUTSIDE_THE_TOP_BAR)
        checks = [sideways_scroll(page), f"outside the top bar: {outside}" if outside else ""]
        for found in [*checks, *serious_violations(page, live_server.url)]:
            if found:
                problems.append(f"{what} ({path}): {found}")
    for page in sessions.values():
        page.context.close()
    assert not problems, "\n".join(problems)


def box(locator: Locator) -> FloatRect:
    found = locator.bounding_box()
    assert found is not None, locator
    return found


def test_on_a_phone_the_decision_comes_before_the_context(
    day: dict[str, Any], browser: Browser, live_server: Any
) -> None:
    page = log_in(browser, live_server.url, day["users"]["r2"], PHONE)
    page.goto(f"{live_server.url}/tasks/{day['approval'].pk}/")
    approve = box(page.get_by_role("button", name="Approve"))
    context = box(page.get_by_role("heading", name="Context"))
    instructions = box(page.get_by_role("heading", name="Instructions"))
    assert instructions["y"] < approve["y"] < context["y"]
    # Within the first two screens, not below the run's inputs and the picture.
    assert approve["y"] < 2 * PHONE["height"]
    assert not sideways_scroll(page)
    # At a desktop's width the panel stays beside the context.
    page.set_viewport_size(size(DESKTOP))
    approve = box(page.get_by_role("button", name="Approve"))
    context = box(page.get_by_role("heading", name="Context"))
    assert approve["x"] > context["x"] + context["width"]
    page.context.close()


def test_phone_screenshots(
    day: dict[str, Any], browser: Browser, live_server: Any, tmp_path: Path
) -> None:
    """The inbox, a task and a run at a phone's width, as PNGs: into docs/screenshots with
    FIREFLY_SCREENSHOTS=1 (how those were made), else into a temporary folder."""
    folder = SCREENSHOTS if os.environ.get("FIREFLY_SCREENSHOTS") else tmp_path
    # A queue that has aged a little, one task past its deadline.
    now = timezone.now()
    for hours, task in enumerate(HumanTask.objects.filter(status="open").order_by("pk")):
        due = now - timedelta(hours=1) if hours == 1 else task.due_at
        HumanTask.objects.filter(pk=task.pk).update(
            created_at=now - timedelta(hours=26 - 3 * hours), due_at=due
        )
    shots = [
        ("r1", "/", "phone-inbox.png"),
        ("r2", f"/tasks/{day['approval'].pk}/", "phone-task.png"),
        ("starter", f"/runs/{day['waiting'].pk}/", "phone-run.png"),
    ]
    for who, path, name in shots:
        page = log_in(browser, live_server.url, day["users"][who], PHONE)
        page.goto(f"{live_server.url}{path}")
        assert not sideways_scroll(page)
        page.screenshot(path=str(folder / name), full_page=True)
        page.context.close()
        png = (folder / name).read_bytes()
        # A PNG's header gives its width: the whole page, no wider than the phone.
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(png[16:20], "big") == PHONE["width"]


def test_the_audit_list_in_admin_passes_axe_at_a_desktops_width(
    day: dict[str, Any], browser: Browser, live_server: Any, django_user_model: Any
) -> None:
    auditor = django_user_model.objects.create_superuser("auditor", "a@example.com", "x")
    page = log_in(browser, live_server.url, auditor, DESKTOP)
    for path in ("/admin/", "/admin/pipelines/auditentry/", "/admin/pipelines/auditentry/?q=r1"):
        page.goto(f"{live_server.url}{path}")
        assert not sideways_scroll(page), path
        assert not serious_violations(page, live_server.url), path
    # Status, latency and the HMAC mark lie inside the window, not behind a scroll.
    for header in ("Status", "Latency ms", "Hmac"):
        cell = box(page.locator("#result_list thead th", has_text=re.compile(header, re.I)))
        assert cell["x"] + cell["width"] <= DESKTOP["width"], header
    actors = {a.strip() for a in page.locator("#result_list td.field-actor_name").all_inner_texts()}
    assert actors == {"r1"}
    page.context.close()
