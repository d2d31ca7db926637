"""The pipeline page's schedules: next fire time, last run, pause and resume (htmx, CSRF),
offered and allowed only to who may change them; and the admin, held to its organizations."""

from __future__ import annotations

import re

from django.contrib.auth.models import Permission
from django.test import Client

from pipelines.models import SecurityEvent
from schedules.firing import schedules_fire
from schedules.models import Firing, Schedule
from tests.schedules.conftest import slot_later

HX = {"HX-Request": "true"}


def test_the_page_shows_next_fire_time_and_last_run_and_pauses(client, make_schedule, users):
    schedule = make_schedule(name="hourly", cron="0 * * * *")
    schedules_fire(now=slot_later(schedule, 1))
    run_id = Firing.objects.get(schedule=schedule).run_id
    client.force_login(users["boss"])
    page = client.get("/pipelines/nightly/").content.decode()
    assert 'id="schedules"' in page
    assert "hourly" in page
    assert "0 * * * * UTC" in page
    assert f'href="/runs/{run_id}/"' in page
    assert "<time datetime=" in page  # the next slot
    assert 'aria-label="Pause schedule hourly"' in page
    answer = client.post(f"/pipelines/nightly/schedules/{schedule.pk}/pause/", headers=HX)
    assert answer.status_code == 200
    html = answer.content.decode()
    assert "paused" in html
    assert 'aria-label="Resume schedule hourly"' in html
    assert Schedule.objects.get().enabled is False
    client.post(f"/pipelines/nightly/schedules/{schedule.pk}/resume/", headers=HX)
    assert Schedule.objects.get().enabled is True


def test_pausing_needs_the_csrf_token(make_schedule, users):
    schedule = make_schedule()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(users["boss"])
    page = browser.get("/pipelines/nightly/").content.decode()
    refused = browser.post(f"/pipelines/nightly/schedules/{schedule.pk}/pause/", headers=HX)
    assert refused.status_code == 403
    assert Schedule.objects.get().enabled is True
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    done = browser.post(
        f"/pipelines/nightly/schedules/{schedule.pk}/pause/",
        {"csrfmiddlewaretoken": token.group(1)},
        headers=HX,
    )
    assert done.status_code == 200
    assert Schedule.objects.get().enabled is False


def test_a_starter_sees_schedules_without_buttons_and_a_forged_post_is_refused(
    client, make_schedule, users
):
    schedule = make_schedule(name="hourly", cron="0 * * * *")
    client.force_login(users["starter"])
    page = client.get("/pipelines/nightly/").content.decode()
    assert "hourly" in page
    assert "Pause schedule" not in page
    answer = client.post(f"/pipelines/nightly/schedules/{schedule.pk}/pause/", headers=HX)
    assert answer.status_code == 403
    assert "may not change the schedules" in answer.content.decode()
    assert Schedule.objects.get().enabled is True
    assert SecurityEvent.objects.filter(event="schedule.refused").exists()


def test_the_admin_lists_only_the_organizations_it_administers(
    client, make_schedule, users, elsewhere, django_user_model
):
    make_schedule(name="ours")
    rights = Permission.objects.filter(codename__in=["view_schedule", "change_schedule"])
    for user in (elsewhere["admin"], users["boss"]):
        user.is_staff = True
        user.save()
        user.user_permissions.add(*rights)
    client.force_login(elsewhere["admin"])
    listed = client.get("/admin/schedules/schedule/")
    assert listed.status_code == 200
    assert "ours" not in listed.content.decode()
    client.force_login(users["boss"])
    listed = client.get("/admin/schedules/schedule/").content.decode()
    assert "ours" in listed
    schedule = Schedule.objects.get()
    client.post(
        "/admin/schedules/schedule/", {"action": "pause", "_selected_action": [schedule.pk]}
    )
    assert Schedule.objects.get().enabled is False
