"""Pipelines, versions, runs, step attempts, checkpoints, handoffs, the outbox; the
evidence tables are in `audit_models.py` (imported here, so that Django knows them)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from pipelines import states
from pipelines.audit_models import (  # noqa: F401  (the evidence tables, registered here)
    AuditEntry,
    AuditEntryQuerySet,
    AuditLedger,
    LedgerState,
    SecurityEvent,
)
from pipelines.immutable import ImmutableModel, ImmutableQuerySet  # noqa: F401


class PipelineRole(models.TextChoices):
    """What a pipeline grant allows; each role includes the ones before it."""

    VIEWER = "viewer", "viewer (sees runs and their data)"
    STARTER = "starter", "starter (also starts runs)"
    OPERATOR = "operator", "operator (also cancels, resumes, forks, acknowledges)"


ROLE_RANK: dict[str, int] = {
    PipelineRole.VIEWER: 1,
    PipelineRole.STARTER: 2,
    PipelineRole.OPERATOR: 3,
}


class Pipeline(models.Model):
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="pipelines", db_index=False
    )
    # Unique within its organization: two organizations may both have a "release".
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Its author sees and operates it whatever the grants say.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The role every member of the organization holds; blank: only the author, the
    # grants and the organization's admins see the pipeline.
    member_role = models.CharField(
        max_length=10, choices=PipelineRole.choices, blank=True, default=""
    )
    # Head of the audit chain for entries about the pipeline itself (not about a run).
    audit_seq = models.PositiveIntegerField(default=0)
    audit_head = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="pipeline_unique_name")
        ]

    def __str__(self) -> str:
        return self.name


class PipelineGrant(models.Model):
    """A role on one pipeline, given to a user or to a group (exactly one of them)."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="pipeline_grants",
    )
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    role = models.CharField(max_length=10, choices=PipelineRole.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pipeline", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="grant_user_or_group",
            ),
            models.UniqueConstraint(fields=["pipeline", "user"], name="grant_unique_user"),
            models.UniqueConstraint(fields=["pipeline", "group"], name="grant_unique_group"),
        ]

    def __str__(self) -> str:
        return f"{self.role} of {self.pipeline} for {self.user or self.group}"


class PipelineVersion(ImmutableModel):
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["pipeline", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "number"], name="pipelineversion_unique")
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name} v{self.number}"


class Run(models.Model):
    class Status(models.TextChoices):
        PENDING = states.PENDING
        RUNNING = states.RUNNING
        WAITING = states.WAITING
        SUCCEEDED = states.SUCCEEDED
        FAILED = states.FAILED
        REJECTED = states.REJECTED
        CANCELLED = states.CANCELLED

    FINISHED = states.RUN_FINISHED

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    pipeline_version = models.ForeignKey(
        PipelineVersion, on_delete=models.PROTECT, related_name="runs"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    inputs = models.JSONField(default=dict)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Bumped by every roll back; step attempts of older generations stay as history.
    generation = models.PositiveIntegerField(default=1)
    forked_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks"
    )
    forked_from_seq = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Heads of the run's audit chain and checkpoint sequence. They live on the run row
    # because every writer already holds that row's lock: appending costs no extra read
    # and concurrent writers cannot fork the chain.
    audit_seq = models.PositiveIntegerField(default=0)
    audit_head = models.CharField(max_length=64, blank=True)
    checkpoint_seq = models.PositiveIntegerField(default=0)
    # Bumped by every transaction that changes the run or its steps: a worker that
    # still holds the revision it last wrote knows its view of the steps is current.
    revision = models.PositiveIntegerField(default=0)
    # The client's `Idempotency-Key` (API): a retried start returns the first run.
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    # A key is scoped to its user and pipeline; the hash of the request that first
    # carried it tells a retry (same request) from a reuse (another one).
    idempotency_scope = models.CharField(max_length=100, blank=True, default="", db_default="")
    request_hash = models.CharField(max_length=64, blank=True, default="", db_default="")
    # A run started by another run's handoff (its envelope is `handoff`).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # Shared by every span of the run and by its children's (pipelines/tracing.py).
    trace_id = models.CharField(max_length=32, blank=True)
    # While the spec's on_finish runs: the outcome its steps reached (the run is still
    # `running`), the lease of the worker running it, and how many attempts it took.
    finishing = models.CharField(max_length=16, blank=True)
    finish_lease_until = models.DateTimeField(null=True, blank=True)
    finish_attempts = models.PositiveIntegerField(default=0)
    # What on_finish recorded with `harness.finalize(...)`.
    disposition = models.JSONField(null=True, blank=True)
    # When its data was erased (pipelines/services/retention.py): by a person's request
    # or by retention; its rows and its audit chain (content redacted) stay until purged.
    redacted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Concurrent duplicates of one start collide here; the loser returns the winner.
            models.UniqueConstraint(
                fields=["organization", "created_by", "idempotency_scope", "idempotency_key"],
                name="run_unique_idempotency_key_org",
                condition=~models.Q(idempotency_key=""),
            )
        ]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="run_status_created"),
            # The runs list's order: the newest page is an index scan that stops early.
            models.Index(fields=["-created_at", "-id"], name="run_created"),
            models.Index(fields=["organization", "-created_at", "-id"], name="run_org_created"),
            models.Index(fields=["pipeline_version", "-created_at"], name="run_version_created"),
            # Retention's sweeps: finished runs of a version by age (to purge), and those
            # not erased yet (to erase; erased ones leave it, however long they are kept).
            # The first also counts the insights' runs per day, index only (its status and
            # organization, for row-level security, included).
            models.Index(
                fields=["pipeline_version", "finished_at"],
                name="run_version_finished",
                include=["status", "organization"],
                condition=models.Q(finished_at__isnull=False),
            ),
            models.Index(
                fields=["pipeline_version", "finished_at"],
                name="run_version_unerased",
                condition=models.Q(finished_at__isnull=False, redacted_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def is_finishing(self) -> bool:
        return bool(self.finishing) and not self.is_finished


class StepRun(models.Model):
    """One attempt of one step in one generation of a run."""

    class Status(models.TextChoices):
        PENDING = states.PENDING
        QUEUED = states.QUEUED
        RUNNING = states.RUNNING
        WAITING = states.WAITING
        SUCCEEDED = states.SUCCEEDED
        FAILED = states.FAILED
        REJECTED = states.REJECTED
        SKIPPED = states.SKIPPED
        CANCELLED = states.CANCELLED

    # Indexed by the unique (run, step_name, generation, attempt) constraint.
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps", db_index=False)
    step_name = models.CharField(max_length=100)
    generation = models.PositiveIntegerField(default=1)
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    inputs = models.JSONField(null=True, blank=True)
    outputs = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "step_name", "generation", "attempt"], name="steprun_unique_attempt"
            )
        ]
        indexes = [
            models.Index(
                fields=["lease_until"],
                name="steprun_running_lease",
                condition=models.Q(status="running"),
            ),
            models.Index(
                fields=["queued_at"],
                name="steprun_queued",
                condition=models.Q(status="queued"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step_name} (gen {self.generation}, attempt {self.attempt})"

    @property
    def latency_ms(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None


class Checkpoint(ImmutableModel):
    """A committed step outcome (or roll back, resume, fork).

    A checkpoint records only what changed: the step attempt it points at holds the
    outputs. The state at any sequence is the fold of checkpoints up to it, so
    storage grows linearly with the number of steps.
    """

    class Kind(models.TextChoices):
        STEP = "step"
        ROLLBACK = "rollback"
        RESUME = "resume"
        FORK = "fork"

    # Indexed by the unique (run, seq) constraint.
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="checkpoints", db_index=False
    )
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.STEP)
    step_name = models.CharField(max_length=100, blank=True)
    generation = models.PositiveIntegerField()
    step_run = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    status = models.CharField(max_length=16, blank=True)
    paused = models.BooleanField(default=False)
    pause_reason = models.TextField(blank=True)
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="checkpoint_unique_seq")]
        indexes = [
            # Deleting a step attempt (retention's purge) makes PostgreSQL look for
            # checkpoints that point at it, at commit, once per attempt: without this
            # index, a scan of the whole table each time.
            models.Index(fields=["step_run"], name="checkpoint_step_run"),
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.seq} of run {self.run_id}"


class HandoffEnvelope(models.Model):
    """Work one run handed to a run of another pipeline (a `handoff` step or on_finish)."""

    class Status(models.TextChoices):
        """Derived from the timestamps, not stored: see `status` and `status_filter`."""

        QUEUED = "queued"
        ACCEPTED = "accepted"  # the child run started work on it
        ACKNOWLEDGED = "acknowledged"  # settled

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    origin_run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="envelopes", db_index=False
    )
    # Empty when on_finish handed it off.
    origin_step = models.CharField(max_length=100, blank=True)
    origin_step_run = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Unique per origin run: a retried or redelivered handoff finds its envelope.
    key = models.CharField(max_length=200)
    target_pipeline = models.CharField(max_length=100)
    payload = models.JSONField(default=dict)
    # The origin step waits for the child run to finish.
    wait = models.BooleanField(default=False)
    child_run = models.OneToOneField(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="handoff"
    )
    queued_at = models.DateTimeField(default=timezone.now)
    # Settled: by `acknowledge_handoff`, or by the waiting step when the child finished.
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decision = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["origin_run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["origin_run", "key"], name="handoff_unique_key")
        ]

    def __str__(self) -> str:
        return f"handoff {self.pk} to {self.target_pipeline}"

    @property
    def accepted_at(self) -> Any:
        """When the child run started work on it (load `child_run` with the envelope)."""
        return self.child_run.started_at if self.child_run_id and self.child_run else None

    # One rule read two ways: `status` on a loaded envelope, `status_filter` in SQL.
    @property
    def status(self) -> str:
        if self.acknowledged_at:
            return self.Status.ACKNOWLEDGED
        return self.Status.ACCEPTED if self.accepted_at else self.Status.QUEUED

    @classmethod
    def status_filter(cls, status: str) -> models.Q:
        """The envelopes whose `status` is `status`."""
        if status == cls.Status.ACKNOWLEDGED:
            return models.Q(acknowledged_at__isnull=False)
        started = status == cls.Status.ACCEPTED
        return models.Q(acknowledged_at__isnull=True, child_run__started_at__isnull=not started)


class OutboxEvent(models.Model):
    """An event some durable subscriber (webhooks) wants, written in the transaction
    that caused it; the relay hands it to those subscribers once and marks it relayed.
    """

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    event = models.CharField(max_length=32)
    payload = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now)
    relayed_at = models.DateTimeField(null=True, blank=True)
    # Relays that failed (a subscriber raised): the sweep tries again.
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=models.Q(relayed_at__isnull=True),
                name="outbox_pending",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} #{self.pk}"


class Heartbeat(models.Model):
    """When a periodic sweep last ran. The reaper records itself each time beat sends it,
    so /readyz can tell that beat is alive (firefly_site/health.py)."""

    REAPER = "reaper"

    name = models.CharField(max_length=64, primary_key=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.seen_at:%Y-%m-%d %H:%M:%S}"
