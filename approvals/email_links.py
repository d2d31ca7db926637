"""Signed, single-use action links in notification emails, and deciding through one."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from approvals import services
from approvals.models import Decision, EmailLinkUse, HumanTask
from pipelines.errors import FireflyError, InvalidInput, PermissionDenied

# A salt of their own: no other signed value of Firefly (sessions, cookies) reads as a link.
SALT = "firefly.approvals.email-action"

APPROVE, REJECT, CHOOSE = "approve", "reject", "choose"


class LinkRefused(FireflyError):
    """A link that is forged, expired, spent or in the wrong hands."""

    http_status = 403
    code = "link_refused"


class LinkUnknown(LinkRefused):
    """No link Firefly made: as for any address it does not know, 404."""

    http_status = 404
    code = "link_unknown"


class LinkExpired(LinkRefused):
    http_status = 410
    code = "link_expired"


class LinkUsed(LinkRefused):
    http_status = 409
    code = "link_used"


@dataclass(frozen=True)
class Link:
    """What a link says, once its signature and expiry are checked."""

    task_id: int
    action: str
    choice: str
    user_id: int
    nonce: str
    expires_at: datetime

    @property
    def label(self) -> str:
        return self.label_of(self.action, self.choice)

    @staticmethod
    def label_of(action: str, choice: str) -> str:
        return f"Choose {choice}" if action == CHOOSE else action.capitalize()


def actions_for(task: HumanTask) -> list[tuple[str, str]]:
    """The (action, choice) pairs an email offers for a task: approve and reject for
    approvals, one per option for choices; forms and pauses only link to the task."""
    if task.kind == HumanTask.Kind.APPROVAL:
        return [(APPROVE, ""), (REJECT, "")]
    if task.kind == HumanTask.Kind.CHOICE:
        return [(CHOOSE, str(option)) for option in task.options or []]
    return []


def token_for(
    task: HumanTask, user: Any, action: str, choice: str = "", *, expires_at: datetime | None = None
) -> str:
    """A signed token naming the task, the action, the recipient, a fresh nonce and when it
    stops working (the task's deadline if sooner than FIREFLY_EMAIL_LINK_HOURS)."""
    if expires_at is None:
        expires_at = timezone.now() + timedelta(hours=settings.FIREFLY_EMAIL_LINK_HOURS)
        if task.due_at is not None:
            expires_at = min(expires_at, task.due_at)
    payload = {
        "t": task.pk,
        "a": action,
        "c": choice,
        "u": user.pk,
        "n": secrets.token_hex(16),
        "e": int(expires_at.timestamp()),
    }
    return signing.dumps(payload, salt=SALT, compress=True)


def url_for(token: str) -> str:
    return settings.FIREFLY_BASE_URL.rstrip("/") + reverse("email-action", args=[token])


def read(token: str, *, now: datetime | None = None) -> Link:
    """The link a token names; LinkRefused when it is forged, LinkExpired when late."""
    try:
        payload = signing.loads(token, salt=SALT)
        link = Link(
            task_id=int(payload["t"]),
            action=str(payload["a"]),
            choice=str(payload.get("c", "")),
            user_id=int(payload["u"]),
            nonce=str(payload["n"]),
            expires_at=datetime.fromtimestamp(int(payload["e"]), tz=UTC),
        )
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise LinkUnknown("This link is not one Firefly signed (it may be cut short).") from exc
    if link.action not in (APPROVE, REJECT, CHOOSE):
        raise LinkUnknown("This link names no action Firefly knows.")
    if link.expires_at <= (now or timezone.now()):
        raise LinkExpired(
            f"This link expired at {link.expires_at:%Y-%m-%d %H:%M} UTC: open the task instead."
        )
    return link


def recipient(link: Link) -> Any:
    user = get_user_model().objects.filter(pk=link.user_id, is_active=True).first()
    if user is None:
        raise LinkRefused("The person this link was sent to can no longer sign in.")
    return user


def used(link: Link) -> EmailLinkUse | None:
    return EmailLinkUse.objects.filter(nonce=link.nonce).first()


def link_decide(*, link: Link, user: Any, comment: str = "") -> HumanTask:
    """Spend the link, then decide as its recipient through the same service (and guard) as
    the web page, with the channel `email`.

    The link is spent in a transaction of its own that commits first: a refused decision
    still spends it (a second click is refused too), and the service's own refusal entry
    commits whatever happens here.
    """
    if user.pk != link.user_id:
        raise PermissionDenied("This link was sent to someone else.")
    task = HumanTask.objects.filter(pk=link.task_id).first()
    if task is None:
        raise LinkRefused(f"No task {link.task_id}.")
    if link.action == REJECT and not comment.strip():
        raise InvalidInput(
            "Say why you reject.", details=[{"field": "comment", "message": "required"}]
        )
    try:
        with transaction.atomic():
            EmailLinkUse.objects.create(
                organization_id=task.organization_id,
                task=task,
                user=user,
                action=link.action,
                nonce=link.nonce,
            )
    except IntegrityError as exc:
        spent = used(link)
        when = f" at {spent.used_at:%Y-%m-%d %H:%M:%S} UTC" if spent else ""
        raise LinkUsed(f"This link was already used{when}.") from exc
    channel = Decision.Channel.EMAIL
    if link.action == APPROVE:
        return services.task_approve(task_id=task.pk, user=user, comment=comment, channel=channel)
    if link.action == REJECT:
        return services.task_reject(task_id=task.pk, user=user, comment=comment, channel=channel)
    return services.task_complete(task_id=task.pk, user=user, choice=link.choice, channel=channel)
