"""The beat's notification work: deadline reminders, once per task, and the digests."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import channels, emails, preferences
from approvals.models import HumanTask, NotificationPreference, QueuedNotification, TaskReminder
from orgs import selectors as orgs

log = logging.getLogger(__name__)

F = NotificationPreference.Frequency
WINDOWS = {F.HOURLY: timedelta(hours=1), F.DAILY: timedelta(days=1)}


def reminders_send(now: datetime | None = None) -> int:
    """Remind the assignees of each open task whose reminder time has come and whose
    deadline has not passed; the number of tasks reminded."""
    now = now or timezone.now()
    due = (
        HumanTask.objects.filter(status=HumanTask.Status.OPEN, remind_at__lte=now, due_at__gt=now)
        .exclude(pk__in=TaskReminder.objects.values("task_id"))
        .select_related("assignee", "assignee_role", "run__pipeline_version__pipeline")
    )
    sent = 0
    for task in due:
        try:
            # Recorded before it is sent: two beats (or a redelivered task) meet at the
            # unique task, and a person is reminded once, not once per beat. A send that
            # fails after this is logged and not retried: a reminder is a courtesy.
            with transaction.atomic():
                TaskReminder.objects.create(
                    organization_id=task.organization_id, task=task, sent_at=now
                )
        except IntegrityError:
            continue
        try:
            emails.email_assignees("task.due_soon", task)
        except Exception:
            log.exception("reminding the assignees of task %s failed", task.pk)
        sent += 1
    return sent


def digests_send(now: datetime | None = None) -> int:
    """Send each person whose digest is due on a channel (hourly or daily since their last
    one there) one message with what was queued for them; the number of digests sent."""
    now = now or timezone.now()
    waiting = (
        QueuedNotification.objects.filter(sent_at__isnull=True)
        .values_list("user_id", "channel")
        .distinct()
    )
    sent = 0
    for user_id, channel in list(waiting):
        try:
            sent += _digest(user_id, channel, now)
        except Exception:
            # Rolled back: still queued for the next beat; the others are sent meanwhile.
            log.exception("the %s digest of user %s failed", channel, user_id)
    return sent


def _digest(user_id: int, channel: str, now: datetime) -> bool:
    other = channels.registry.get(channel)
    with transaction.atomic():
        # The lock makes a second beat wait, then find nothing left to send.
        pref, _ = NotificationPreference.objects.select_for_update().get_or_create(user_id=user_id)
        frequency = getattr(pref, preferences.FREQUENCY.get(channel, "frequency"))
        last_field = preferences.LAST_DIGEST.get(channel, "last_digest_at")
        last = getattr(pref, last_field)
        if last is not None and now - last < WINDOWS.get(F(frequency), timedelta(0)):
            return False
        items = list(
            QueuedNotification.objects.select_for_update(of=("self",))
            .filter(user_id=user_id, channel=channel, sent_at__isnull=True)
            .select_related("task", "run")
            .order_by("created_at", "id")
        )
        person = get_user_model().objects.filter(pk=user_id, is_active=True).first()
        if person is not None and channel == preferences.EMAIL and not person.email:
            person = None
        if person is not None and channel != preferences.EMAIL:
            # A channel no longer installed, or an account no longer linked: dropped.
            person = person if other is not None and not other.unreachable(person) else None
        # Only what still concerns them: of organizations they still belong to.
        kept = [
            i for i in items if person is not None and orgs.is_member(person, i.organization_id)
        ]
        QueuedNotification.objects.filter(pk__in=[i.pk for i in items]).update(sent_at=now)
        if not kept or person is None:
            return False
        setattr(pref, last_field, now)
        pref.save(update_fields=[last_field])
        # Sent inside the transaction: if the send fails, the items stay queued for the
        # next beat; a crash after the send and before the commit sends one twice.
        if other is None:
            emails.send([emails.digest_message(person, kept)])
        else:
            other.digest(person, emails.digest_lines(kept))
        return True
