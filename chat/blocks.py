"""Block Kit for a task: its message with buttons, the message once decided, the reject modal."""

from __future__ import annotations

import json
from typing import Any

from approvals.models import HumanTask

APPROVE, REJECT = "approve", "reject"
# The modal's callback id: its submission is a reject with the reason typed in it.
REJECT_VIEW = "firefly_reject"
REASON_BLOCK, REASON_INPUT = "reason", "reason"
# Block Kit limits: a header's text, a section's text, a field, fields per section.
HEADER_MAX, TEXT_MAX, FIELD_MAX, FIELDS_MAX = 150, 3000, 2000, 10
INPUTS_SHOWN = 8


def escape(text: str) -> str:
    """Slack's mrkdwn reads &, < and > as markup: a task's text must not become a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def action_id(action: str, task_id: int) -> str:
    """`approve:<task id>`: the task and the action, nothing secret (the click is signed)."""
    return f"{action}:{task_id}"


def read_action_id(value: str) -> tuple[str, int] | None:
    action, _, task = value.partition(":")
    if action not in (APPROVE, REJECT) or not task.isdigit() or len(task) > 18:
        return None
    return action, int(task)


def title(task: HumanTask) -> str:
    return _cut(f"{task.get_kind_display()}: {task.step_name} (run {task.run_id})", HEADER_MAX)


def _summary(task: HumanTask, url: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title(task)}},
    ]
    lines = [f"<{url}|Open task {task.pk} in Firefly>"]
    if task.instructions:
        lines.insert(0, escape(task.instructions))
    blocks.append(
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut("\n".join(lines), TEXT_MAX)}}
    )
    inputs = (task.context or {}).get("inputs") or {}
    if isinstance(inputs, dict) and inputs:
        fields = [
            {
                "type": "mrkdwn",
                "text": _cut(
                    f"*{escape(str(k))}*\n{escape(json.dumps(v, default=str))}", FIELD_MAX
                ),
            }
            for k, v in sorted(inputs.items())[: min(INPUTS_SHOWN, FIELDS_MAX)]
        ]
        blocks.append({"type": "section", "fields": fields})
    return blocks


def task_message(task: HumanTask, url: str) -> tuple[str, list[dict[str, Any]]]:
    """The message a task opens with: its summary, and Approve and Reject for approvals
    (other kinds are decided on their page: a form or a choice needs more than a button)."""
    blocks = _summary(task, url)
    if task.kind == HumanTask.Kind.APPROVAL:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"firefly_task:{task.pk}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": action_id(APPROVE, task.pk),
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "value": str(task.pk),
                    },
                    {
                        "type": "button",
                        "action_id": action_id(REJECT, task.pk),
                        "text": {"type": "plain_text", "text": "Reject"},
                        "style": "danger",
                        "value": str(task.pk),
                    },
                ],
            }
        )
    return f"{title(task)} needs a decision", blocks


def decided_message(task: HumanTask, url: str, outcome: str) -> tuple[str, list[dict[str, Any]]]:
    """The same message once the task is closed: no buttons, what happened and who did it."""
    blocks = _summary(task, url)
    blocks.append(
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(outcome), TEXT_MAX)}}
    )
    return f"{title(task)}: {outcome}", blocks


def reject_modal(task: HumanTask, metadata: dict[str, Any]) -> dict[str, Any]:
    """The modal Reject opens: the reason is required, as on every other channel."""
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": json.dumps(metadata),
        "title": {"type": "plain_text", "text": "Reject"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*{escape(title(task))}*"},
            },
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Why do you reject?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 3000,
                },
            },
        ],
    }
