"""The evidence tables: the audit chain's entries, refusals that belong to no run
(`SecurityEvent`), and the global audit sequence (`AuditLedger`, `LedgerState`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from pipelines.immutable import ImmutableModel, ImmutableQuerySet


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
        "pipelines.Run",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        db_index=False,
    )
    pipeline = models.ForeignKey(
        "pipelines.Pipeline", on_delete=models.PROTECT, related_name="+", db_index=False
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
