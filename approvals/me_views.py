"""The reviewer's own settings page: who covers for them while away, what they hear of."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_POST

from approvals import channels, preferences, selectors, services
from approvals.models import NotificationPreference
from orgs.middleware import organization_of
from pipelines.errors import FireflyError, InvalidInput


@require_GET
@login_required
def me(request: HttpRequest) -> HttpResponse:
    return _page(request)


def _page(
    request: HttpRequest,
    *,
    error: str = "",
    pref_error: str = "",
    posted: Any = None,
    status: int = 200,
) -> HttpResponse:
    organization = organization_of(request)
    prefs = preferences.preference_of(request.user)
    context = {
        "delegation": selectors.delegation_of(request.user, organization),
        "covering": selectors.covering_now(request.user, organization),
        "error": error,
        "pref_error": pref_error,
        "posted": posted or {},
        "prefs": prefs,
        "pref_events": [
            (
                label,
                [
                    (
                        preferences.field(channel, name),
                        getattr(prefs, preferences.field(channel, name)),
                    )
                    for channel in preferences.CHANNELS
                ],
            )
            for name, label in PREF_EVENTS
        ],
        "frequencies": NotificationPreference.Frequency.choices,
        "chat_unreachable": _chat_unreachable(request.user),
        "nav": "me",
    }
    return render(request, "approvals/me.html", context, status=status)


def _chat_unreachable(user: Any) -> str:
    chat = channels.registry.get(preferences.CHAT)
    return "Chat is not part of this Firefly." if chat is None else chat.unreachable(user)


# The events one may hear of, as the form names them.
PREF_EVENTS = (
    ("new_task", "A task for me (or one of my roles) opens or is escalated"),
    ("due_soon", "A task of mine nears its deadline"),
    ("task_decided", "A gate of a run I started is decided"),
    ("run_finished", "A run I started finishes or fails"),
)


def _when(raw: str, field: str, label: str) -> datetime:
    """A date and time from the form's datetime-local field, read as UTC."""
    try:
        value = parse_datetime(raw.strip())
    except ValueError:
        value = None
    if value is None:
        raise InvalidInput(
            f"{label}: give a date and time (YYYY-MM-DD HH:MM, UTC).",
            details=[{"field": field, "message": "not a date and time"}],
        )
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


@require_POST
@login_required
def delegation_set(request: HttpRequest) -> HttpResponse:
    try:
        starts = request.POST.get("starts_at", "").strip()
        services.delegation_set(
            user=request.user,
            organization=organization_of(request),
            delegate=request.POST.get("delegate", ""),
            starts_at=_when(starts, "starts_at", "From") if starts else timezone.now(),
            ends_at=_when(request.POST.get("ends_at", ""), "ends_at", "Until"),
            address=request.META.get("REMOTE_ADDR"),
        )
    except FireflyError as exc:
        return _page(request, error=exc.message, posted=request.POST, status=exc.http_status)
    messages.success(request, "Saved: your delegate decides your tasks too, in that range.")
    return redirect("me")


@require_POST
@login_required
def delegation_clear(request: HttpRequest) -> HttpResponse:
    services.delegation_clear(
        user=request.user,
        organization=organization_of(request),
        address=request.META.get("REMOTE_ADDR"),
    )
    messages.success(request, "Delegation ended: your tasks are yours alone again.")
    return redirect("me")


@require_POST
@login_required
def preferences_save(request: HttpRequest) -> HttpResponse:
    try:
        preferences.preferences_set(
            user=request.user,
            frequency=request.POST.get("frequency", ""),
            # Absent (a form from before chat was a channel): as it was.
            chat_frequency=request.POST.get(
                "chat_frequency", preferences.preference_of(request.user).chat_frequency
            ),
            **{name: name in request.POST for name in preferences.FIELDS},
        )
    except FireflyError as exc:
        return _page(request, pref_error=exc.message, status=exc.http_status)
    messages.success(request, "Saved: Firefly tells you what you chose, as often as you chose.")
    return redirect("me")
