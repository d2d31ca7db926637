"""Block Kit for a task: its message with buttons, the message once decided, the reject modal."""

from __future__ import annotations

import json
from typing import Any

from approvals.models import HumanTask

APPROVE, REJECT, CHOOSE, OPEN = "approve", "reject", "choose", "open"
# The modal's callback id: its submission is a reject with the reason typed in it.
REJECT_VIEW = "firefly_reject"
REASON_BLOCK, REASON_INPUT = "reason", "reason"
# Block Kit limits: a header's text, a section's text, a field, fields per section.
HEADER_MAX, TEXT_MAX, FIELD_MAX, FIELDS_MAX = 150, 3000, 2000, 10
# Slack's limits on interactive elements: a button's text and value, an option's text and
# value, options in a static select, blocks in a message, a link button's URL.
BUTTON_TEXT_MAX, BUTTON_VALUE_MAX = 75, 2000
OPTION_TEXT_MAX, OPTION_VALUE_MAX, OPTIONS_MAX = 75, 150, 100
BLOCKS_MAX, URL_MAX = 50, 3000
# Up to this many options are buttons side by side; more are one static select.
CHOICE_BUTTONS_MAX = 5
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
    """The action and task a decision element names; None for anything else (the link
    button, which Slack reports too, decides nothing)."""
    action, _, rest = value.partition(":")
    # A choice's buttons add their index, as Slack wants each action id unique in a block.
    task = rest.split(":", 1)[0] if action == CHOOSE else rest
    if action not in (APPROVE, REJECT, CHOOSE) or not task.isdigit() or len(task) > 18:
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


def _choice_elements(task: HumanTask) -> list[dict[str, Any]] | None:
    """One button per option, or one static select past CHOICE_BUTTONS_MAX options; None
    when an option cannot be a value within Slack's limits (the page decides then)."""
    options = [str(o) for o in task.options or []]
    if not options:
        return None
    if len(options) <= CHOICE_BUTTONS_MAX:
        if any(len(o) > BUTTON_VALUE_MAX for o in options):
            return None
        # One action id per button: Slack wants them unique within the block.
        return [
            {
                "type": "button",
                "action_id": f"{CHOOSE}:{task.pk}:{i}",
                "text": {"type": "plain_text", "text": _cut(o, BUTTON_TEXT_MAX)},
                "value": o,
            }
            for i, o in enumerate(options)
        ]
    if len(options) > OPTIONS_MAX or any(len(o) > OPTION_VALUE_MAX for o in options):
        return None
    return [
        {
            "type": "static_select",
            "action_id": action_id(CHOOSE, task.pk),
            "placeholder": {"type": "plain_text", "text": "Choose…"},
            "options": [
                {"text": {"type": "plain_text", "text": _cut(o, OPTION_TEXT_MAX)}, "value": o}
                for o in options
            ],
        }
    ]


def _open_button(task: HumanTask, url: str) -> dict[str, Any]:
    """A link to the task's page: Slack opens it in the browser (and reports the click,
    which decides nothing)."""
    return {
        "type": "button",
        "action_id": action_id(OPEN, task.pk),
        "text": {"type": "plain_text", "text": "Open in Firefly"},
        "url": url[:URL_MAX],
    }


def task_message(
    task: HumanTask, url: str, verb: str = "needs a decision"
) -> tuple[str, list[dict[str, Any]]]:
    """The message a task opens with: its summary, then Approve and Reject for approvals,
    its options for choices, and a link to the page for forms (filled in there)."""
    blocks = _summary(task, url)
    elements: list[dict[str, Any]]
    if task.kind == HumanTask.Kind.APPROVAL:
        elements = [
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
        ]
    elif task.kind == HumanTask.Kind.CHOICE:
        elements = _choice_elements(task) or [_open_button(task, url)]
    else:
        elements = [_open_button(task, url)]
    blocks.append({"type": "actions", "block_id": f"firefly_task:{task.pk}", "elements": elements})
    return f"{title(task)} {verb}", blocks


def notice_message(line: str, url: str) -> tuple[str, list[dict[str, Any]]]:
    """One line of news with its link."""
    text = _cut(f"<{url}|{escape(line)}>", TEXT_MAX)
    return line, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]


def digest_message(lines: list[tuple[str, str]]) -> tuple[str, list[dict[str, Any]]]:
    """A digest in one message: a header, then the lines with their links, as many to a
    section as its text holds; past Slack's blocks per message, a count of the rest."""
    count = len(lines)
    heading = f"Your digest: {count} update{'s' if count != 1 else ''}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": heading}}
    ]
    chunk: list[str] = []
    shown = 0

    def flush() -> None:
        if chunk:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}})
            chunk.clear()

    for text, url in lines:
        item = _cut(f"• <{url}|{escape(text)}>", TEXT_MAX)
        if sum(len(c) + 1 for c in chunk) + len(item) > TEXT_MAX:
            flush()
        # One block kept for the count of what did not fit.
        if len(blocks) >= BLOCKS_MAX - 1:
            break
        chunk.append(item)
        shown += 1
    flush()
    if shown < count:
        more = f"…and {count - shown} more: see your inbox in Firefly."
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": more}})
    return heading, blocks


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
