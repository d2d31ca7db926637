"""Calls to Slack's Web API, through the outbound guard, with the bot token."""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.conf import settings

from pipelines import outbound

log = logging.getLogger(__name__)

ALLOWED = "FIREFLY_SLACK_API_HOSTS"
# Slack reads these methods' arguments from a form (or the query), never from JSON.
FORM_METHODS = frozenset({"users.info"})


class SlackError(Exception):
    """Slack answered `ok: false` (its error code in the message), or could not be reached."""


def enabled() -> bool:
    return bool(settings.FIREFLY_SLACK_BOT_TOKEN)


def call(method: str, **arguments: Any) -> dict[str, Any]:
    """One Web API method; returns Slack's answer when it says `ok`."""
    url = f"{settings.FIREFLY_SLACK_API_URL.rstrip('/')}/{method}"
    headers = {"Authorization": f"Bearer {settings.FIREFLY_SLACK_BOT_TOKEN}"}
    body: dict[str, Any]
    if method in FORM_METHODS:
        body = {"data": arguments}
    else:
        headers["Content-Type"] = "application/json; charset=utf-8"
        body = {"json": arguments}
    try:
        response = outbound.send(
            "POST",
            url,
            allowed=ALLOWED,
            max_redirects=0,
            timeout=settings.FIREFLY_SLACK_TIMEOUT_S,
            headers=headers,
            **body,
        )
    except outbound.Refused as exc:
        raise SlackError(f"{method}: the outbound guard refused {url}: {exc}") from exc
    except requests.RequestException as exc:
        raise SlackError(f"{method}: {exc}") from exc
    try:
        answer = response.json()
    except ValueError as exc:
        raise SlackError(f"{method}: HTTP {response.status_code}, not JSON") from exc
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise SlackError(f"{method}: {error or f'HTTP {response.status_code}'}")
    return answer


def email_of(slack_user_id: str) -> str:
    """The address Slack has for a user ('' for bots, deleted users and hidden emails)."""
    user = call("users.info", user=slack_user_id).get("user") or {}
    if user.get("deleted") or user.get("is_bot"):
        return ""
    return str((user.get("profile") or {}).get("email") or "")


def say_privately(channel: str, slack_user_id: str, text: str) -> None:
    """A message only that user sees, where they clicked; a failure is logged, not raised:
    the refusal it explains is already recorded."""
    try:
        call("chat.postEphemeral", channel=channel, user=slack_user_id, text=text)
    except SlackError:
        log.exception("could not tell Slack user %s privately: %s", slack_user_id, text)
