"""Chat as a notification channel: direct messages to a person's linked Slack account."""

from __future__ import annotations

import logging
from typing import Any

from approvals import channels, preferences
from approvals.models import HumanTask
from chat import blocks, messages, people, slack

log = logging.getLogger(__name__)

VERBS = {
    "task.opened": "needs you",
    "task.escalated": "was escalated to you",
    "task.due_soon": "is due soon",
}


def unreachable(person: Any) -> str:
    """Why chat cannot reach the person ('' when it can): only a linked account is
    written to, never an account guessed from an email address."""
    if not slack.enabled():
        return "Chat is not set up on this Firefly."
    if not people.slack_user_of(person.pk):
        return "Chat needs your Slack account linked to Firefly: ask an administrator."
    return ""


def task_posted(event: str, task: HumanTask, persons: list[Any]) -> None:
    """The task's own message, with its actions, to each person directly (kept, so that it
    is updated once the task is decided)."""
    verb = VERBS.get(event, "needs you")
    for person in persons:
        where = people.slack_user_of(person.pk)
        if not where:
            continue
        try:
            messages.message_post(task, where, verb)
        except slack.SlackError:
            # One person Slack cannot reach must not keep the others from hearing.
            log.exception("could not tell %s of task %s in chat", person.pk, task.pk)


def _direct(person: Any, text: str, content: list[dict[str, Any]]) -> None:
    where = people.slack_user_of(person.pk)
    if where:
        slack.call("chat.postMessage", channel=where, text=text, blocks=content, unfurl_links=False)


def notice(person: Any, line: str, url: str) -> None:
    text, content = blocks.notice_message(line, url)
    _direct(person, text, content)


def digest(person: Any, lines: list[channels.Line]) -> None:
    text, content = blocks.digest_message(lines)
    _direct(person, text, content)


def register() -> None:
    channels.register(
        channels.Channel(
            name=preferences.CHAT,
            label="Chat",
            unreachable=unreachable,
            task=task_posted,
            notice=notice,
            digest=digest,
        )
    )
