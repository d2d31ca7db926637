"""Notifications as each person prefers: emails from templates with signed action links,
and the same news through the channels other apps register (chat)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string

from approvals import channels, email_links, notifications, preferences
from approvals.models import HumanTask, QueuedNotification, TaskComment
from pipelines.models import Run

log = logging.getLogger(__name__)

# Inputs shown in the message itself; the rest is one click away on the task's page.
INPUTS_SHOWN = 8
VERBS = {
    "task.opened": "needs you",
    "task.escalated": "was escalated to you",
    "task.due_soon": "is due soon",
}


def email_assignees(event: str, task: HumanTask) -> None:
    """When a task opens, is escalated or nears its deadline, one message per person it is
    for (or a line in their next digest): each carries links signed for its recipient
    alone, so a forwarded message decides nothing."""
    if event not in VERBS:
        return
    messages = []
    # Everyone the task is for: email needs an address, another channel may not.
    people = notifications.recipients(task, addressed=False)
    line = f"{_task_line(task)} {VERBS[event]}"
    with preferences.known(people):
        for person in (p for p in people if p.email):
            how = preferences.route(person, event)
            if how == preferences.DIGEST:
                _queue(person, event, line, task=task)
            elif how == preferences.NOW:
                messages.append(_task_message(event, task, person))
        send(messages)
        for channel in channels.registered():
            now = [p for p in people if _wants(channel, p, event, line, task=task)]
            if now:
                _through(channel, partial(channel.task, event, task, now))


def _wants(
    channel: channels.Channel,
    person: Any,
    event: str,
    line: str,
    *,
    task: Any = None,
    run: Any = None,
) -> bool:
    """Whether to tell the person on the channel now; queued for its digest instead when
    they chose one. Nothing at all when the channel cannot reach them."""
    # Whether the channel can reach them first: with chat not set up, that asks nothing.
    if channel.unreachable(person):
        return False
    how = preferences.route(person, event, channel.name)
    if how == preferences.OFF:
        return False
    if how == preferences.DIGEST:
        _queue(person, event, line, task=task, run=run, channel=channel.name)
        return False
    return True


def _through(channel: channels.Channel, call: Callable[[], None]) -> None:
    try:
        call()
    except Exception:
        # A channel that fails (chat unreachable) must not keep the others from telling.
        log.exception("notifying through %s failed", channel.name)


def _task_line(task: HumanTask) -> str:
    return f"Run {task.run_id}, step {task.step_name}: a {task.get_kind_display().lower()}"


def _task_message(event: str, task: HumanTask, person: Any) -> EmailMultiAlternatives:
    verb = VERBS[event]
    subject = f"[Firefly] {task.get_kind_display()} {verb}: {task.step_name} (run {task.run_id})"
    inputs = (task.context or {}).get("inputs") or {}
    shown = sorted(inputs.items())[:INPUTS_SHOWN] if isinstance(inputs, dict) else []
    context: dict[str, Any] = {
        "task": task,
        "verb": verb,
        "person": person,
        "task_url": notifications.task_url(task),
        "inputs": shown,
        "more_inputs": len(inputs) - len(shown) if isinstance(inputs, dict) else 0,
        "actions": [
            (
                email_links.Link.label_of(action, choice),
                email_links.url_for(email_links.token_for(task, person, action, choice)),
            )
            for action, choice in email_links.actions_for(task)
        ],
        "sign_in_first": not settings.FIREFLY_EMAIL_ACTIONS,
    }
    return _message(subject, "approvals/email/task", context, person)


def email_requester(event: str, task: HumanTask) -> None:
    """Whoever started the run hears each gate's outcome (unless they decided it)."""
    if event not in ("task.decided", "task.expired"):
        return
    starter = notifications.requester(task.run_id, task.organization_id)
    if starter is None or starter.pk == task.decided_by_id:
        return
    by = task.decided_by.get_username() if task.decided_by else "the deadline"
    line = f"Run {task.run_id}, step {task.step_name}: {task.status} by {by}"
    _tell(starter, event, line, notifications.task_url(task), task=task)


def email_run_end(event: str, payload: dict[str, Any]) -> None:
    """Whoever started the run hears how it ended (an events hook, after commit)."""
    if event != "run.finished":
        return
    run_id = payload.get("run")
    run = Run.objects.filter(pk=run_id).first() if isinstance(run_id, int) else None
    if run is None or run.created_by_id is None:
        return  # started by no person (a schedule, a hook, a parent run): nobody to tell
    starter = notifications.requester(run.pk, run.organization_id)
    if starter is None:
        return
    line = f"Run {run.pk} of {payload.get('pipeline', '')} {payload.get('status', run.status)}"
    _tell(starter, event, line, _run_url(run.pk), run=run)


def email_mentioned(comment: TaskComment, people: list[Any]) -> None:
    """The people a comment @mentions (who may open its task) hear of it."""
    task = comment.task
    author = comment.author.get_username()
    line = f"{author} mentioned you on run {task.run_id}, step {task.step_name}"
    for person in people:
        _tell(person, "task.mentioned", line, notifications.task_url(task), task=task)


def _run_url(run_id: int) -> str:
    return f"{settings.FIREFLY_BASE_URL.rstrip('/')}/runs/{run_id}/"


def _tell(
    person: Any, event: str, line: str, url: str, *, task: Any = None, run: Any = None
) -> None:
    how = preferences.route(person, event)
    if how == preferences.DIGEST and person.email:
        _queue(person, event, line, task=task, run=run)
    elif how == preferences.NOW and person.email:
        context = {"line": line, "url": url, "person": person}
        send([_message(f"[Firefly] {line}", "approvals/email/notice", context, person)])
    for channel in channels.registered():
        if _wants(channel, person, event, line, task=task, run=run):
            _through(channel, partial(channel.notice, person, line, url))


def _queue(
    person: Any,
    event: str,
    text: str,
    *,
    task: Any = None,
    run: Any = None,
    channel: str = preferences.EMAIL,
) -> None:
    QueuedNotification.objects.create(
        organization_id=(task or run).organization_id,
        user=person,
        event=event,
        channel=channel,
        text=text[:300],
        task=task,
        run=run,
    )


def digest_lines(items: list[QueuedNotification]) -> list[channels.Line]:
    """What a digest gathered, one line and link per task (its latest news) or run."""
    lines: dict[tuple[str, int], channels.Line] = {}
    for item in items:
        if item.task_id is not None:
            key, url = ("task", item.task_id), notifications.task_url(item.task)  # type: ignore[arg-type]
        else:
            key, url = ("run", item.run_id or 0), _run_url(item.run_id or 0)
        lines.pop(key, None)
        lines[key] = (item.text, url)
    return list(lines.values())


def digest_message(person: Any, items: list[QueuedNotification]) -> EmailMultiAlternatives:
    """One message for what a person's digest gathered: one line and link per task or run."""
    lines = digest_lines(items)
    count = len(lines)
    subject = f"[Firefly] Your digest: {count} update{'s' if count != 1 else ''}"
    context = {"lines": lines, "person": person}
    return _message(subject, "approvals/email/digest", context, person)


def _message(
    subject: str, template: str, context: dict[str, Any], person: Any
) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(
        subject,
        render_to_string(f"{template}.txt", context),
        settings.DEFAULT_FROM_EMAIL,
        [person.email],
    )
    message.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
    return message


def send(messages: list[EmailMultiAlternatives]) -> None:
    if messages:
        # One connection for all of them: one SMTP session, not one per person.
        get_connection().send_messages(messages)
