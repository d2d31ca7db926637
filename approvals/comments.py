"""A task's comment thread: writing a comment, and telling the people it @mentions."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from approvals.guards import can_view
from approvals.models import HumanTask, TaskComment
from pipelines.errors import InvalidInput, NotFound
from pipelines.services.unit_of_work import locked_run

# Long enough for a reasoned note; a thread is not where documents go.
BODY_MAX = 5000
# "@name" where the name is a username (letters, digits and @.+-_), not inside an address.
MENTION = re.compile(r"(?<![\w.+-])@([\w.@+-]{1,150})")
# At most this many people are told of one comment: a comment is not a mailing list.
MENTIONS_MAX = 20

# Called after commit with (comment, [people mentioned who may see the task]).
MentionListener = Callable[[TaskComment, list[Any]], None]
mention_listeners: list[MentionListener] = []


def listen(listener: MentionListener) -> None:
    if listener not in mention_listeners:
        mention_listeners.append(listener)


def mentioned(body: str) -> list[str]:
    """The usernames a text mentions, each once, in order (a trailing dot is punctuation)."""
    names: list[str] = []
    for raw in MENTION.findall(body):
        name = raw.rstrip(".")
        if name and name not in names:
            names.append(name)
    return names[:MENTIONS_MAX]


def task_comment(*, task_id: int, user: Any, body: str) -> TaskComment:
    """Add a comment to the thread of a task the user may open (decided or not); the
    people it @mentions who may open the task too are told after commit."""
    # PostgreSQL text cannot hold NUL characters; nobody means to write one.
    text = body.replace("\x00", "").strip()
    if not text:
        raise InvalidInput(
            "Write something first.", details=[{"field": "body", "message": "required"}]
        )
    if len(text) > BODY_MAX:
        raise InvalidInput(
            f"A comment is at most {BODY_MAX} characters; this one has {len(text)}.",
            details=[{"field": "body", "message": f"at most {BODY_MAX} characters"}],
        )
    run_id = HumanTask.objects.filter(pk=task_id).values_list("run_id", flat=True).first()
    if run_id is None:
        raise NotFound(f"No task {task_id}.")
    with locked_run(run_id, actor=user) as txn:
        task = HumanTask.objects.select_related("assignee", "assignee_role").get(pk=task_id)
        if not can_view(user, task):
            raise NotFound(f"No task {task_id}.")
        candidates = get_user_model().objects.filter(
            username__in=mentioned(text),
            is_active=True,
            memberships__organization_id=task.organization_id,
        )
        # Only who may open the task hears of it: a mention is no way to show it to others.
        people = [
            p for p in candidates.order_by("username") if can_view(p, task) and p.pk != user.pk
        ]
        comment = TaskComment.objects.create(
            organization_id=task.organization_id,
            task=task,
            author=user,
            body=text,
            mentions=[p.get_username() for p in people],
            created_at=txn.now,
        )
        txn.audit(
            "task.commented",
            step_name=task.step_name,
            status=task.status,
            data={"task": task.pk, "comment": comment.pk, "mentions": comment.mentions},
        )
    transaction.on_commit(lambda: _tell(comment, people))
    return comment


def _tell(comment: TaskComment, people: list[Any]) -> None:
    for listener in mention_listeners:
        listener(comment, people)
