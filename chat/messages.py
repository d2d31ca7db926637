"""The message each task gets in chat: posted when it opens, updated once it is decided."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.utils import timezone

from approvals import notifications, preferences
from approvals.models import Decision, HumanTask
from chat import blocks, people, slack
from chat.models import ChatMessage

log = logging.getLogger(__name__)

T = HumanTask.Status
# Slack's chat.update allows bursts well above this (its tier 3: 50 a minute, with bursts).
UPDATERS = 8
OUTCOME = {
    T.COMPLETED: "Approved",
    T.REJECTED: "Rejected",
    T.EXPIRED: "Expired",
    T.CANCELLED: "Cancelled",
}


def on_task_event(event: str, task: HumanTask) -> None:
    """A notifications listener: post to the team's channel when a task opens or is
    escalated, update every message of the task once it is closed, whichever channel
    closed it. (People hear of their tasks in chat as they chose: notices.py.)"""
    if not slack.enabled():
        return
    if event in ("task.opened", "task.escalated"):
        where = destination(task, event)
        if where:
            message_post(task, where)
        else:
            log.info(
                "task %s: not posted to a channel (none set, or its one person hears)", task.pk
            )
    elif event in ("task.decided", "task.expired"):
        messages_close(task)


def destination(task: HumanTask, event: str = "task.opened") -> str:
    """FIREFLY_SLACK_CHANNEL, unless the task is for one person who hears of it in chat
    themselves (a linked account, chat wanted for the event): one message is enough."""
    person = task.assignee
    if (
        person is not None
        and people.slack_user_of(person.pk)
        and preferences.route(person, event, preferences.CHAT) != preferences.OFF
    ):
        return ""
    return settings.FIREFLY_SLACK_CHANNEL


def message_post(task: HumanTask, where: str, verb: str = "needs a decision") -> ChatMessage:
    """Post the task's message (with its actions) to a channel or a Slack user id, and
    keep where it went, so that it is updated once the task is decided."""
    text, content = blocks.task_message(task, notifications.task_url(task), verb)
    answer = slack.call(
        "chat.postMessage", channel=where, text=text, blocks=content, unfurl_links=False
    )
    # Slack answers with the conversation it posted in (a user id becomes their DM's id):
    # that, with the ts, is what chat.update needs.
    return ChatMessage.objects.create(
        organization_id=task.organization_id,
        task=task,
        channel=str(answer["channel"]),
        ts=str(answer["ts"]),
    )


def outcome(task: HumanTask) -> str:
    """`Approved by r1 (chat) at 2026-12-01 10:00 UTC`, with the reason of a rejection."""
    last = (
        Decision.objects.filter(task=task)
        .exclude(action=Decision.Action.ESCALATE)
        .order_by("-id")
        .first()
    )
    verb = OUTCOME.get(T(task.status), task.status.capitalize())
    if task.status == T.COMPLETED and last is not None and last.action == Decision.Action.CHOOSE:
        verb = f"Chosen: {(last.data or {}).get('choice', '')},"
    elif task.status == T.COMPLETED and task.kind == HumanTask.Kind.INPUT:
        verb = "Submitted"
    when = f" at {task.decided_at:%Y-%m-%d %H:%M} UTC" if task.decided_at else ""
    if task.decided_by is None:
        return f"{verb}: the deadline passed{when}"
    where = f" ({last.channel})" if last is not None and last.channel else ""
    said = ""
    if last is not None and last.comment and task.status == T.REJECTED:
        said = f": {last.comment}"
    return f"{verb} by {task.decided_by.get_username()}{where}{when}{said}"


def messages_close(task: HumanTask) -> None:
    """Remove the buttons of every message posted for the task and say what happened.

    The updates go to Slack side by side (at most UPDATERS at once): after a click they
    run before the interactivity endpoint answers, and Slack waits 3 s at most, so a
    task posted to a dozen people must cost about one round trip, not a dozen."""
    if task.is_open:
        return
    said = outcome(task)
    text, content = blocks.decided_message(task, notifications.task_url(task), said)
    posted = list(ChatMessage.objects.filter(task_id=task.pk).order_by("pk"))
    if not posted:
        return

    def update(message: ChatMessage) -> int | None:
        try:
            slack.call(
                "chat.update", channel=message.channel, ts=message.ts, text=text, blocks=content
            )
        except slack.SlackError:
            # One message that cannot be updated (deleted, channel archived) must not keep
            # the others from showing the outcome.
            log.exception("could not update chat message %s of task %s", message.ts, task.pk)
            return None
        return message.pk

    # Only the HTTP calls run in the threads; the database is written here, once.
    with ThreadPoolExecutor(max_workers=min(UPDATERS, len(posted))) as pool:
        updated = [pk for pk in pool.map(update, posted) if pk is not None]
    ChatMessage.objects.filter(pk__in=updated).update(closed_at=timezone.now())
