"""The out-of-office page: name a delegate, see whom one covers, end it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import Delegation

pytestmark = pytest.mark.django_db


def test_name_a_delegate_then_end_it(client_for, users):
    client = client_for(users["r1"])
    page = client.get("/me/").content.decode()
    assert "Nobody covers for you." in page
    until = (timezone.now() + timedelta(days=5)).replace(second=0, microsecond=0)
    shown = f"{until:%Y-%m-%d %H:%M} UTC"
    response = client.post(
        "/me/delegation/", {"delegate": "r2", "ends_at": f"{until:%Y-%m-%dT%H:%M}"}, follow=True
    )
    html = response.content.decode()
    assert "r2 covers your tasks from" in html
    assert f"to {shown}" in html
    (delegation,) = Delegation.objects.all()
    assert (delegation.user, delegation.delegate) == (users["r1"], users["r2"])

    covered = client_for(users["r2"]).get("/me/").content.decode()
    assert f"r1, until {shown}" in covered

    client = client_for(users["r1"])
    client.post("/me/delegation/clear/")
    assert not Delegation.objects.exists()


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"delegate": "r2", "ends_at": "next week"}, "Until: give a date and time"),
        ({"delegate": "r2", "ends_at": "2001-01-01T00:00"}, "The end is in the past"),
        ({"delegate": "nobody", "ends_at": "2099-01-01T00:00"}, "at most 366 days"),
        ({"delegate": "r2", "ends_at": "2099-13-45T00:00"}, "Until: give a date and time"),
        (
            {"delegate": "nobody", "starts_at": "2099-01-01T00:00", "ends_at": "2099-01-02T00:00"},
            "not a member",
        ),
    ],
)
def test_a_bad_form_says_what_is_wrong_and_keeps_what_was_typed(client_for, users, form, says):
    response = client_for(users["r1"]).post("/me/delegation/", form)
    assert response.status_code == 400
    html = response.content.decode()
    assert says in html
    assert f'value="{form["delegate"]}"' in html
    assert not Delegation.objects.exists()


def test_the_page_is_for_signed_in_people(client):
    assert client.get("/me/").status_code == 302
    assert client.post("/me/delegation/", {"delegate": "x"}).status_code == 302


def test_notification_preferences_are_saved_from_the_page(client_for, users):
    from approvals.models import NotificationPreference

    client = client_for(users["r1"])
    page = client.get("/me/").content.decode()
    assert 'name="new_task" checked' in page  # everything on by default
    client.post("/me/notifications/", {"email": "on", "due_soon": "on", "frequency": "daily"})
    pref = NotificationPreference.objects.get(user=users["r1"])
    assert (pref.email, pref.new_task, pref.due_soon, pref.frequency) == (
        True,
        False,
        True,
        "daily",
    )
    page = client.get("/me/").content.decode()
    assert 'name="new_task">' in page
    assert '<option value="daily" selected>' in page
    response = client.post("/me/notifications/", {"frequency": "weekly"})
    assert response.status_code == 400
    assert "&#x27;weekly&#x27; is not a frequency" in response.content.decode()
