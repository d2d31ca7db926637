"""Notification emails: plain text and HTML from templates, with signed action links."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string

from approvals import email_links, notifications
from approvals.models import HumanTask

# Inputs shown in the message itself; the rest is one click away on the task's page.
INPUTS_SHOWN = 8


def email_assignees(event: str, task: HumanTask) -> None:
    """When a task opens or is escalated, one message per person it is for: each carries
    links signed for its recipient alone, so a forwarded message decides nothing."""
    if event not in ("task.opened", "task.escalated"):
        return
    people = notifications.recipients(task)
    if not people:
        return
    verb = "needs you" if event == "task.opened" else "was escalated to you"
    subject = f"[Firefly] {task.get_kind_display()} {verb}: {task.step_name} (run {task.run_id})"
    inputs = (task.context or {}).get("inputs") or {}
    shown = sorted(inputs.items())[:INPUTS_SHOWN] if isinstance(inputs, dict) else []
    messages = []
    for person in people:
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
        message = EmailMultiAlternatives(
            subject,
            render_to_string("approvals/email/task.txt", context),
            settings.DEFAULT_FROM_EMAIL,
            [person.email],
        )
        message.attach_alternative(
            render_to_string("approvals/email/task.html", context), "text/html"
        )
        messages.append(message)
    # One connection for all of them: one SMTP session, not one per person.
    get_connection().send_messages(messages)
