"""Who a Slack user is in Firefly: a linked account, or the one active user with their email."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from chat import slack
from chat.models import ChatIdentity


class Unmapped(Exception):
    """No Firefly user answers for this Slack user; the message tells them why."""


def firefly_user(slack_user_id: str, team_id: str) -> Any:
    """The active Firefly user a Slack user acts as, or Unmapped.

    A linked account wins; without one, Slack's email for the user names them when
    FIREFLY_SLACK_MATCH_EMAIL is on, and only if exactly one active user has it.
    """
    identity = ChatIdentity.objects.select_related("user").filter(slack_user_id=slack_user_id)
    linked = identity.first()
    if linked is not None:
        if linked.team_id and linked.team_id != team_id:
            raise Unmapped("Your Slack account is linked to Firefly from another workspace.")
        if not linked.user.is_active:
            raise Unmapped(
                "The Firefly user your Slack account is linked to can no longer sign in."
            )
        return linked.user
    if not settings.FIREFLY_SLACK_MATCH_EMAIL:
        raise Unmapped("Your Slack account is not linked to a Firefly user.")
    try:
        email = slack.email_of(slack_user_id)
    except slack.SlackError as exc:
        raise Unmapped(f"Firefly could not ask Slack who you are ({exc}).") from exc
    if not email:
        raise Unmapped("Slack shows no email address for you, and your account is not linked.")
    users = list(
        get_user_model().objects.filter(is_active=True, email__iexact=email).order_by("pk")[:2]
    )
    if len(users) != 1:
        some = "several Firefly users have" if users else "no Firefly user has"
        raise Unmapped(f"Your Slack email is not enough to tell who you are: {some} it.")
    return users[0]


def slack_user_of(user_id: int | None) -> str:
    """The linked Slack account of a Firefly user ('' when there is none)."""
    if user_id is None:
        return ""
    found = ChatIdentity.objects.filter(user_id=user_id, user__is_active=True)
    return found.values_list("slack_user_id", flat=True).order_by("pk").first() or ""
