"""`/api/v1/me/notifications/`: one's own notification preferences, by channel."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals import channels, preferences
from approvals.models import NotificationPreference
from firefly_site.api_errors import AUTH_ERRORS, INVALID
from pipelines.api import validated

FREQUENCIES = NotificationPreference.Frequency.values


class EventsSerializer(serializers.Serializer):
    new_task = serializers.BooleanField(
        required=False, help_text="A task for you (or one of your roles) opens or is escalated."
    )
    due_soon = serializers.BooleanField(
        required=False, help_text="A task of yours nears its deadline."
    )
    task_decided = serializers.BooleanField(
        required=False, help_text="A gate of a run you started is decided."
    )
    run_finished = serializers.BooleanField(
        required=False, help_text="A run you started finishes or fails."
    )


class ChannelSerializer(serializers.Serializer):
    on = serializers.BooleanField(required=False, help_text="Off: nothing by this channel.")
    frequency = serializers.ChoiceField(
        FREQUENCIES, required=False, help_text="At once, or gathered in an hourly or daily digest."
    )
    events = EventsSerializer(required=False)
    reachable = serializers.BooleanField(
        read_only=True, help_text="Whether Firefly can reach you by this channel now."
    )
    unreachable_reason = serializers.CharField(
        read_only=True, help_text="Why not ('' when it can); for chat: no linked Slack account."
    )


class NotificationsSerializer(serializers.Serializer):
    email = ChannelSerializer(required=False)
    chat = ChannelSerializer(required=False)


def _unreachable(channel: str, user: Any) -> str:
    if channel == preferences.EMAIL:
        return "" if user.email else "Your account has no email address."
    other = channels.registry.get(channel)
    return "This Firefly has no such channel." if other is None else other.unreachable(user)


def _state(user: Any) -> dict[str, Any]:
    prefs = preferences.preference_of(user)
    state: dict[str, Any] = {}
    for channel in preferences.CHANNELS:
        why = _unreachable(channel, user)
        state[channel] = {
            "on": getattr(prefs, channel),
            "frequency": getattr(prefs, preferences.FREQUENCY[channel]),
            "events": {
                e: getattr(prefs, preferences.field(channel, e)) for e in preferences.EVENTS
            },
            "reachable": not why,
            "unreachable_reason": why,
        }
    return state


class MyNotifications(APIView):
    @extend_schema(
        summary="Your notification preferences: each channel's events and frequency",
        responses={200: NotificationsSerializer, **AUTH_ERRORS},
    )
    def get(self, request: Request) -> Response:
        return Response(NotificationsSerializer(_state(request.user)).data)

    @extend_schema(
        summary="Change your notification preferences (what is not sent stays as it was)",
        request=NotificationsSerializer,
        responses={200: NotificationsSerializer, **INVALID, **AUTH_ERRORS},
    )
    def put(self, request: Request) -> Response:
        sent = validated(NotificationsSerializer, request)
        now = _state(request.user)
        wanted: dict[str, bool] = {}
        frequency: dict[str, str] = {}
        for channel in preferences.CHANNELS:
            given = sent.get(channel) or {}
            wanted[channel] = given.get("on", now[channel]["on"])
            frequency[channel] = given.get("frequency", now[channel]["frequency"])
            events = {**now[channel]["events"], **(given.get("events") or {})}
            for event, on in events.items():
                wanted[preferences.field(channel, event)] = on
        preferences.preferences_set(
            user=request.user,
            frequency=frequency[preferences.EMAIL],
            chat_frequency=frequency[preferences.CHAT],
            **wanted,
        )
        return Response(NotificationsSerializer(_state(request.user)).data)
