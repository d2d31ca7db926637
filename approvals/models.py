"""Human tasks and the decisions people make on them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone

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

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks")
    # The run's pipeline, kept on the task so the insights group and filter tasks by it
    # without joining the runs (empty only on rows from before the column, none left).
    pipeline = models.ForeignKey(
        "pipelines.Pipeline",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
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
    # When its assignees are reminded of the deadline (the step's remind_before_hours).
    remind_at = models.DateTimeField(null=True, blank=True)
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
            models.Index(fields=["organization", "status", "due_at"], name="task_org_status_due"),
            # The API's list order: its newest page stops after the page, not a sort of the
            # organization's tasks (bench/api.py).
            models.Index(fields=["organization", "-created_at", "-id"], name="task_org_created"),
            models.Index(fields=["assignee", "status"], name="task_assignee_status"),
            models.Index(fields=["assignee_role", "status"], name="task_role_status"),
            # The insights page's time to decision: the organization's tasks decided in a
            # date range.
            models.Index(
                fields=["organization", "decided_at"],
                name="task_org_decided",
                condition=models.Q(decided_at__isnull=False),
            ),
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

    class Channel(models.TextChoices):
        """Where the decision was made."""

        WEB = "web"
        API = "api"
        EMAIL = "email"
        CHAT = "chat"
        DEADLINE = "deadline"

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    task = models.ForeignKey(HumanTask, on_delete=models.CASCADE, related_name="decisions")
    # Empty for the deadline's own decisions (expire, escalate, approve/reject on timeout).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    comment = models.TextField(blank=True)
    data = models.JSONField(null=True, blank=True)
    rollback_to = models.CharField(max_length=100, blank=True)
    # Empty on decisions recorded before channels were.
    channel = models.CharField(max_length=16, choices=Channel.choices, blank=True)
    # Set when `user` decided as the delegate of this person (out of office).
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
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
        indexes = [
            # The insights page's decisions per day, and "Decided by me" newest first.
            models.Index(fields=["organization", "created_at"], name="decision_org_created"),
            models.Index(
                fields=["user", "organization", "-created_at", "-id"], name="decision_user_created"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} on task {self.task_id}"


class EmailLinkUse(models.Model):
    """A signed email action link that was used: each link decides once (its nonce is
    unique), and a second click finds it here."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    task = models.ForeignKey(HumanTask, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=16)
    nonce = models.CharField(max_length=32, unique=True)
    used_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.action} link for task {self.task_id} used by {self.user_id}"


class Delegation(models.Model):
    """While `user` is away (starts_at to ends_at), `delegate` may decide their tasks too,
    on their behalf. One per person and organization: setting another replaces it."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    delegate = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user"], name="delegation_one_per_user"
            ),
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")),
                name="delegation_ends_after_start",
            ),
            models.CheckConstraint(
                condition=~models.Q(user=models.F("delegate")), name="delegation_not_to_self"
            ),
        ]
        indexes = [
            # The inbox asks "whom do I cover now?" on every page: by delegate and range.
            models.Index(fields=["organization", "delegate", "ends_at"], name="delegation_delegate")
        ]

    def __str__(self) -> str:
        return f"{self.delegate_id} covers {self.user_id} until {self.ends_at:%Y-%m-%d}"

    def active(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return self.starts_at <= now < self.ends_at


class NotificationPreference(models.Model):
    """What a person wants to hear of, by which channel, and how often (no row:
    everything, by email and by chat, at once). Each channel has its own events and its
    own frequency: the plain names are email's, `chat_` ones chat's."""

    class Frequency(models.TextChoices):
        IMMEDIATE = "immediate", "At once"
        HOURLY = "hourly", "Hourly digest"
        DAILY = "daily", "Daily digest"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    email = models.BooleanField(default=True)
    new_task = models.BooleanField(default=True)
    due_soon = models.BooleanField(default=True)
    task_decided = models.BooleanField(default=True)
    run_finished = models.BooleanField(default=True)
    frequency = models.CharField(
        max_length=16, choices=Frequency.choices, default=Frequency.IMMEDIATE
    )
    last_digest_at = models.DateTimeField(null=True, blank=True)
    # Chat reaches only a person with a linked chat account; without one these wait.
    chat = models.BooleanField(default=True)
    chat_new_task = models.BooleanField(default=True)
    chat_due_soon = models.BooleanField(default=True)
    chat_task_decided = models.BooleanField(default=True)
    chat_run_finished = models.BooleanField(default=True)
    chat_frequency = models.CharField(
        max_length=16, choices=Frequency.choices, default=Frequency.IMMEDIATE
    )
    chat_last_digest_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"notification preferences of {self.user_id}"


class QueuedNotification(models.Model):
    """Something to tell a person in their next digest."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=32)
    # Which channel's digest it goes in: `email`, or one another app registered (`chat`).
    channel = models.CharField(max_length=16, default="email")
    task = models.ForeignKey(HumanTask, null=True, blank=True, on_delete=models.CASCADE)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE)
    text = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["sent_at", "user"], name="queued_unsent")]

    def __str__(self) -> str:
        return f"{self.event} for {self.user_id}"


class TaskReminder(models.Model):
    """A deadline reminder sent for a task: one per task, whatever the beat does twice."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    task = models.OneToOneField(HumanTask, on_delete=models.CASCADE, related_name="+")
    sent_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"reminder for task {self.task_id}"


class TaskComment(models.Model):
    """A note in a task's thread, beside its decision; @mentions in it notify people."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    task = models.ForeignKey(HumanTask, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.TextField()
    # Usernames the comment mentioned who could see the task (and so were told).
    mentions = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["task", "created_at", "id"]

    def __str__(self) -> str:
        return f"comment {self.pk} on task {self.task_id}"


class TaskDay(models.Model):
    """The tasks that closed on one day (UTC), by pipeline, step, assignee and status: how
    many, and a histogram of how long they waited (approvals.rollup's buckets). Kept by
    the decision services in the decision's transaction; the insights read it."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    day = models.DateField()
    # Keys, not foreign keys (0: none): a row outlives the pipeline, person or role.
    pipeline_key = models.BigIntegerField()
    step_name = models.CharField(max_length=100)
    user_key = models.BigIntegerField()
    role_key = models.BigIntegerField()
    status = models.CharField(max_length=16)
    tasks = models.PositiveIntegerField()
    waits = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "organization",
                    "day",
                    "pipeline_key",
                    "step_name",
                    "user_key",
                    "role_key",
                    "status",
                ],
                name="taskday_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tasks} {self.status} tasks of {self.step_name} on {self.day}"


class DecisionDay(models.Model):
    """The decisions made on one day (UTC), by pipeline and action: how many."""

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    day = models.DateField()
    pipeline_key = models.BigIntegerField()
    action = models.CharField(max_length=16)
    decisions = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "day", "pipeline_key", "action"], name="decisionday_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.decisions} {self.action} on {self.day}"
