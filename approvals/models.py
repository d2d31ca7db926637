"""Human tasks and the decisions people make on them."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from pipelines import outbound
from pipelines.models import Run, StepRun


class HumanTask(models.Model):
    class Kind(models.TextChoices):
        APPROVAL = "approval"
        INPUT = "input"
        CHOICE = "choice"
        PAUSE = "pause"

    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETED = "completed"
        REJECTED = "rejected"
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks")
    # The waiting attempt this task decides; one task per attempt.
    step_run = models.OneToOneField(StepRun, on_delete=models.CASCADE, related_name="task")
    step_name = models.CharField(max_length=100)
    generation = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    assignee_role = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    instructions = models.TextField(blank=True)
    # What the reviewer sees: the run inputs and upstream outputs the step asked to show.
    context = models.JSONField(default=dict, blank=True)
    form_schema = models.JSONField(null=True, blank=True)
    options = models.JSONField(null=True, blank=True)
    quorum = models.PositiveSmallIntegerField(default=1)
    allow_self_approval = models.BooleanField(default=False)
    due_at = models.DateTimeField(null=True, blank=True)
    on_timeout = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "due_at"], name="task_status_due"),
            models.Index(fields=["assignee", "status"], name="task_assignee_status"),
            models.Index(fields=["assignee_role", "status"], name="task_role_status"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} task {self.pk} ({self.step_name})"

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN

    @property
    def is_overdue(self) -> bool:
        return self.is_open and self.due_at is not None and self.due_at < timezone.now()


class Decision(models.Model):
    class Action(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        ROLLBACK = "rollback"
        SUBMIT = "submit"
        CHOOSE = "choose"
        EXPIRE = "expire"
        ESCALATE = "escalate"

    task = models.ForeignKey(HumanTask, on_delete=models.CASCADE, related_name="decisions")
    # Empty for the deadline's own decisions (expire, escalate, approve/reject on timeout).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    comment = models.TextField(blank=True)
    data = models.JSONField(null=True, blank=True)
    rollback_to = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["task", "created_at", "id"]
        constraints = [
            # One vote per person per task and action: an approval and then a veto
            # (reject or roll back) by the same person are both kept.
            models.UniqueConstraint(
                fields=["task", "user", "action"],
                name="decision_one_per_user_action",
                condition=models.Q(user__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.action} on task {self.task_id}"


# --- Outbound webhooks ----------------------------------------------------------------

# The code of a URL the outbound guard refused (callers audit those refusals).
REFUSED = "outbound_refused"

WEBHOOK_EVENTS = (
    "task.opened",
    "task.decided",
    "task.expired",
    "task.escalated",
    "run.finished",
    "run.failed",
)


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def validate_webhook_url(url: str) -> None:
    """Refuse a URL the outbound guard would not send to (no request forgery by webhook)."""
    try:
        outbound.check(url, allowed=outbound.WEBHOOKS)
    except (outbound.Refused, outbound.Unresolved) as exc:
        # A name with no address now is refused too: nothing shows where it would lead.
        raise ValidationError(str(exc), code=REFUSED) from exc


def validate_webhook_events(events: object) -> None:
    if not isinstance(events, list) or not events:
        raise ValidationError("events must be a non-empty list of event names.", code="invalid")
    unknown = sorted({str(e) for e in events} - set(WEBHOOK_EVENTS))
    if unknown:
        raise ValidationError(
            f"unknown events: {', '.join(unknown)} (known: {', '.join(WEBHOOK_EVENTS)}).",
            code="invalid",
        )


class Webhook(models.Model):
    """An outbound subscription: matching events are POSTed, signed with `secret`."""

    url = models.URLField(max_length=500, validators=[validate_webhook_url])
    events = models.JSONField(default=list, validators=[validate_webhook_events])
    secret = models.CharField(max_length=128, default=new_webhook_secret)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event for one webhook, and how sending it went (the delivery log)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32)
    # Stable over retries, so a receiver can drop a repeat it already handled.
    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When the next attempt is due (or the current one should have ended): a pending
    # delivery long past it lost its message, and the sweep sends it again.
    next_attempt_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="delivery_status_created"),
            models.Index(fields=["status", "next_attempt_at"], name="delivery_status_next"),
            models.Index(fields=["webhook", "-created_at"], name="delivery_webhook_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to webhook {self.webhook_id} ({self.status})"
