"""The pipeline page's schedules in a real browser: paused and resumed from the keyboard."""

from __future__ import annotations

from playwright.sync_api import expect

from pipelines import services
from schedules import services as schedules
from schedules.models import Schedule
from tests.schedules.conftest import NIGHTLY


def test_an_author_pauses_and_resumes_a_schedule_with_the_keyboard(
    transactional_db, users, page_for, live_server
):
    services.pipeline_create(spec=NIGHTLY, member_role="starter")
    schedules.schedule_create(
        pipeline="nightly",
        actor=users["boss"],
        name="hourly",
        cron="0 * * * *",
        inputs={"target": "prod"},
    )
    page = page_for(users["boss"])
    page.goto(f"{live_server.url}/pipelines/nightly/")
    section = page.locator("#schedules")
    expect(section.get_by_text("0 * * * * UTC")).to_be_visible()
    section.get_by_role("button", name="Pause schedule hourly").focus()
    page.keyboard.press("Enter")
    resume = page.locator("#schedules").get_by_role("button", name="Resume schedule hourly")
    expect(resume).to_be_visible()
    expect(page.locator("#schedules").get_by_text("paused")).to_be_visible()
    assert Schedule.objects.get().enabled is False
    resume.focus()
    page.keyboard.press("Space")
    expect(
        page.locator("#schedules").get_by_role("button", name="Pause schedule hourly")
    ).to_be_visible()
    assert Schedule.objects.get().enabled is True
