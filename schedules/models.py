"""Schedules of a pipeline's runs, and each slot they came due at (a firing)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.timezone import now


class Schedule(models.Model):
    """Runs of one pipeline on a clock: a cron expression in a time zone, or an interval."""

    class Origin(models.TextChoices):
        SPEC = "spec", "the pipeline's spec"
        MANUAL = "manual", "the API, a page or the admin"

    class Overlap(models.TextChoices):
        """When the schedule's previous run is still going (spec_schedules.OVERLAP)."""

        SKIP = "skip"
        QUEUE = "queue"
        START_ANYWAY = "start_anyway"

    class Missed(models.TextChoices):
        """Slots that came due while nothing fired them (spec_schedules.MISSED)."""

        SKIP_MISSED = "skip_missed"
        CATCH_UP_ONCE = "catch_up_once"

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    pipeline = models.ForeignKey(
        "pipelines.Pipeline", on_delete=models.CASCADE, related_name="schedules"
    )
    name = models.SlugField(max_length=100)
    cron = models.CharField(max_length=200, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    every_s = models.PositiveIntegerField(null=True, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    overlap = models.CharField(max_length=16, choices=Overlap.choices, default="skip")
    missed = models.CharField(max_length=16, choices=Missed.choices, default="skip_missed")
    # A spec's schedules follow its versions (created, changed, removed by the next one);
    # the others are left alone by a new version.
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.MANUAL)
    # What the spec said last (spec origin): a new version changes the schedule only when
    # its entry differs, so a pause made since is kept across versions that do not touch it.
    definition = models.JSONField(null=True, blank=True)
    # The next slot not yet handled; NULL: dormant (paused and its pause recorded).
    next_fire_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        ordering = ["pipeline_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "name"], name="schedule_unique_name"),
            models.CheckConstraint(
                condition=(models.Q(every_s__isnull=True) & ~models.Q(cron=""))
                | (models.Q(every_s__isnull=False) & models.Q(cron="")),
                name="schedule_cron_or_interval",
            ),
        ]
        indexes = [
            # The beat's question: what is due? Only rows with a next slot.
            models.Index(
                fields=["next_fire_at"],
                name="schedule_due",
                condition=models.Q(next_fire_at__isnull=False),
            ),
            models.Index(fields=["organization"], name="schedule_organization"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.timing})"

    @property
    def timing(self) -> str:
        if self.every_s is not None:
            return f"every {self.every_s} s"
        return f"{self.cron} {self.timezone}"


class Firing(models.Model):
    """One slot of a schedule, handled once: a run started, queued, or skipped and why.

    Unique per (schedule, slot): a beat that runs twice for the same slot (restarted, or
    two beats at once) finds the row and starts nothing more.
    """

    class Status(models.TextChoices):
        FIRED = "fired"
        QUEUED = "queued"  # waits for the schedule's previous run to finish
        SKIPPED = "skipped"

    class Reason(models.TextChoices):
        NONE = "", "-"
        OVERLAP = "overlap"
        MISSED = "missed"
        PAUSED = "paused"
        REFUSED = "refused"  # the run could not start (its inputs, the pipeline)
        CANCELLED = "cancelled"  # a queued firing whose schedule was removed or paused

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="firings")
    slot_at = models.DateTimeField()
    status = models.CharField(max_length=8, choices=Status.choices)
    reason = models.CharField(max_length=10, choices=Reason.choices, blank=True, default="")
    # Slots that came due before this one and were not run on their own (downtime).
    missed = models.PositiveIntegerField(default=0)
    detail = models.TextField(blank=True)
    run = models.ForeignKey(
        "pipelines.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The run a queued firing waits for (and a skipped one overlapped with).
    previous_run = models.ForeignKey(
        "pipelines.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=now)
    fired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-slot_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "slot_at"], name="firing_once_per_slot")
        ]
        indexes = [
            models.Index(
                fields=["previous_run"],
                name="firing_queued",
                condition=models.Q(status="queued"),
            ),
            models.Index(fields=["organization"], name="firing_organization"),
            models.Index(fields=["run"], name="firing_run"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} at {self.slot_at:%Y-%m-%d %H:%M:%S}: {self.status}"
