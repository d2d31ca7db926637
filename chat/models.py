"""Posted chat messages, linked chat accounts, and the clicks already seen."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from approvals.models import HumanTask


class ChatMessage(models.Model):
    """A message posted for a task: where it is (channel and ts, as Slack names a message),
    so that it can be updated once the task is decided."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    task = models.ForeignKey(HumanTask, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=64)
    ts = models.CharField(max_length=32)
    posted_at = models.DateTimeField(default=timezone.now)
    # When the message last showed the task's outcome (empty while it offers buttons).
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "ts"], name="chatmessage_unique_ts")
        ]

    def __str__(self) -> str:
        return f"chat message {self.channel}/{self.ts} for task {self.task_id}"


class ChatIdentity(models.Model):
    """An explicit link from a Slack account to a Firefly user: it wins over matching by
    email, and it is where a task for one person is sent directly."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_identities"
    )
    slack_user_id = models.CharField(max_length=32, unique=True)
    # The workspace (team id) the account belongs to; empty: whichever sent it.
    team_id = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "chat identities"

    def __str__(self) -> str:
        return f"Slack {self.slack_user_id} is {self.user_id}"


class ChatRequestSeen(models.Model):
    """A signed request or a click already taken: the same one again is a replay. Rows
    older than the timestamp window are useless (such a request is refused as too old)
    and are deleted as new ones come."""

    key = models.CharField(max_length=200, unique=True)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.key
