"""Pipelines, versions, runs, step attempts, checkpoints and the audit trail."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from pipelines import states


class ImmutableQuerySet(models.QuerySet):
    """Refuses bulk update and delete: the rows it manages are history."""

    def update(self, **kwargs: Any) -> int:
        raise TypeError(f"{self.model.__name__} rows are immutable and cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError(f"{self.model.__name__} rows are immutable and cannot be deleted.")


class ImmutableModel(models.Model):
    """A row that is written once and never changed or deleted."""

    objects = ImmutableQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise TypeError(f"{type(self).__name__} rows are immutable and cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError(f"{type(self).__name__} rows are immutable and cannot be deleted.")


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


class AuditEntryQuerySet(ImmutableQuerySet):
    def redact(self, now: Any) -> int:
        """Empty the content of these entries, keeping everything their hashes cover.

        The one change the database lets through (pipelines migration 0016): content
        fields emptied, `redacted_at` set, every other column as it was. Use
        `pipelines.audit.redact`, which records the redaction in the chain.
        """
        return models.QuerySet.update(
            self.filter(redacted_at__isnull=True),
            inputs=None,
            outputs=None,
            data=None,
            error_message="",
            pause_reason="",
            redacted_at=now,
        )


class AuditEntry(ImmutableModel):
    """One link of a run's (or a pipeline's) tamper-evident audit chain."""

    # Indexed by the organization's newest-first index below.
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    # Both indexed by the constraints and indexes below, led by these columns. The run's
    # id outlives its row: retention purges old runs while their (redacted) entries stay,
    # so the key has no database constraint; verify_audit checks the chains of purged
    # runs against the heads their purge recorded (pipelines/services/retention.py).
    run = models.ForeignKey(
        Run,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        db_index=False,
    )
    pipeline = models.ForeignKey(
        Pipeline, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    seq = models.PositiveIntegerField()
    step_name = models.CharField(max_length=100, blank=True)
    event = models.CharField(max_length=64)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, default="system")
    status = models.CharField(max_length=16, blank=True)
    inputs = models.JSONField(null=True, blank=True)
    outputs = models.JSONField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    pause_reason = models.TextField(blank=True)
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64)
    # How `hash` was computed (pipelines.canonical.SCHEMES): rows from before the column,
    # and rows inserted without it, are scheme 1; the chain sets the current one (3).
    hash_scheme = models.PositiveSmallIntegerField(default=3, db_default=1)
    # The id of the key that signed `hash` (pipelines.keys); '' on rows from before
    # key ids, which "default" signed.
    key_id = models.CharField(max_length=32, blank=True, default="", db_default="")
    # Scheme 3: SHA-256 of the content fields, which `hash` covers in their place, so a
    # redaction (content emptied, `redacted_at` set) leaves the chain verifiable.
    content_hash = models.CharField(max_length=64, blank=True, default="", db_default="")
    redacted_at = models.DateTimeField(null=True, blank=True)

    objects = AuditEntryQuerySet.as_manager()  # type: ignore[misc]

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        constraints = [
            models.UniqueConstraint(
                fields=["run", "seq"],
                name="audit_unique_run_seq",
                condition=models.Q(run__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["pipeline", "seq"],
                name="audit_unique_pipeline_seq",
                condition=models.Q(run__isnull=True),
            ),
        ]
        indexes = [
            models.Index(fields=["event", "-created_at"], name="audit_event_created"),
            models.Index(fields=["pipeline", "-created_at"], name="audit_pipeline_created"),
            models.Index(fields=["-created_at"], name="audit_created"),
            models.Index(fields=["organization", "-created_at"], name="audit_org_created"),
            # For the admin's filters and search (pipelines/admin.py): each filter column
            # leads an index, which serves the filtered page in created_at order and the
            # loose index scan that lists the filter's choices.
            models.Index(fields=["status", "-created_at"], name="audit_status_created"),
            models.Index(fields=["actor_name", "-created_at"], name="audit_actor_created"),
            models.Index(fields=["step_name", "-created_at"], name="audit_step_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event} #{self.seq}"


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


class SecurityEvent(ImmutableModel):
    """A refusal that belongs to no run: a locked-out login, a throttled or forbidden call.

    Refusals about a run are entries of that run's audit chain; these are the rest.
    Append-only like the audit trail (a PostgreSQL trigger refuses UPDATE and DELETE).
    """

    # The organization the refused request acted in; empty when it acted in none.
    organization = models.ForeignKey(
        "orgs.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    event = models.CharField(max_length=64)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, default="anonymous")
    address = models.GenericIPAddressField(null=True, blank=True)
    reason = models.TextField()
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["event", "-created_at"], name="security_event_created")]

    def __str__(self) -> str:
        return f"{self.event} by {self.actor_name}"


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


class AuditLedger(ImmutableModel):
    """The global audit sequence: every entry of every chain at one gap-free position.

    Filled by one sequencer at a time (pipelines/anchors.py). Each position's `link` is
    the HMAC of the position, the entry it names and the previous position's link, so a
    position that is removed, changed or moved breaks every later link. Plain columns,
    not foreign keys: the ledger keeps naming an entry (or a run) that was deleted.
    """

    position = models.BigIntegerField(primary_key=True)
    entry_id = models.BigIntegerField(unique=True)
    run_id = models.BigIntegerField(null=True, blank=True)
    pipeline_id = models.BigIntegerField()
    seq = models.PositiveIntegerField()
    entry_hash = models.CharField(max_length=64)
    key_id = models.CharField(max_length=64)
    link = models.CharField(max_length=64)

    class Meta:
        ordering = ["position"]

    def __str__(self) -> str:
        return f"position {self.position}"


class LedgerState(models.Model):
    """The sequencer's and the anchoring's progress: one row (pk 1), locked by each run.

    Bookkeeping only: rewinding it proves nothing, since the anchors outside the
    database and the ledger's links are what `verify_audit --anchors` checks.
    """

    # The last position given, and its link.
    position = models.BigIntegerField(default=0)
    head = models.CharField(max_length=64, blank=True)
    # Every entry with an id up to `floor` has a position; entries above it are looked
    # for on each run, so one whose transaction commits late is never skipped.
    floor = models.BigIntegerField(default=0)
    # The highest entry id seen by the previous run, and the transactions of this
    # database then in progress, as [pid, transaction id] (PostgreSQL): once none of
    # them is left, `floor` may rise to `pending_horizon`.
    pending_horizon = models.BigIntegerField(null=True, blank=True)
    pending_transactions = models.JSONField(null=True, blank=True)
    # The last anchor written to every store: its number, ledger position and signature.
    anchor_number = models.BigIntegerField(default=0)
    anchor_position = models.BigIntegerField(default=0)
    anchor_signature = models.CharField(max_length=64, blank=True)
    # An anchor made and signed but not yet in every store (a store failed): the next
    # run writes this very line again before making a new one.
    pending_anchor = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"ledger at {self.position}, anchor {self.anchor_number}"


class Heartbeat(models.Model):
    """When a periodic sweep last ran. The reaper records itself each time beat sends it,
    so /readyz can tell that beat is alive (firefly_site/health.py)."""

    REAPER = "reaper"

    name = models.CharField(max_length=64, primary_key=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.seen_at:%Y-%m-%d %H:%M:%S}"
