"""A click in Slack: checked signature and age, no replay, a known user, the same guards."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import guards, services
from approvals.models import Decision, HumanTask
from chat import blocks, people, signing, slack
from chat.models import ChatRequestSeen
from orgs import rls
from orgs import selectors as orgs
from pipelines.errors import FireflyError, InvalidInput
from pipelines.security import refusal_record

log = logging.getLogger(__name__)

CHAT = Decision.Channel.CHAT
REFUSED = "chat.refused"
# A request is seen once: kept past the longest a signed timestamp is accepted either
# side of now, so a replay within its window always finds it.
SEEN_FOR = timedelta(seconds=3 * signing.MAX_AGE_S)


@dataclass(frozen=True)
class Answer:
    """What the endpoint answers Slack: a status and, for a modal, a JSON body."""

    status: int = 200
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Click:
    """Who acted, from where, in a checked payload."""

    slack_user: str
    team: str
    channel: str
    address: str | None


def interaction_receive(*, body: bytes, headers: Mapping[str, str], address: str | None) -> Answer:
    """Check a request from Slack's interactivity, then act on it."""
    secret = settings.FIREFLY_SLACK_SIGNING_SECRET
    if not secret or not slack.enabled():
        return Answer(404, {"error": "Decisions from chat are off."})
    signature = headers.get(signing.SIGNATURE)
    try:
        stamp = signing.verify(
            secret, body, signature, headers.get(signing.TIMESTAMP), now=time.time()
        )
    except signing.BadRequestSignature as exc:
        if _may_record_unsigned():
            return _refused(str(exc), address=address, status=401)
        log.warning("refused chat request from %s (not recorded: too many): %s", address, exc)
        return Answer(401, {"error": str(exc)})
    payload = _payload(body)
    if payload is None:
        return _refused("the body is not a form with a JSON `payload`", address=address, status=400)
    user, team = _obj(payload.get("user")), _obj(payload.get("team"))
    click = Click(
        slack_user=str(user.get("id") or ""),
        team=str(team.get("id") or user.get("team_id") or ""),
        channel=_channel_of(payload),
        address=address,
    )
    keys = [f"sig:{stamp}:{signature}"]
    keys += [
        f"action:{click.team}:{click.slack_user}:{a.get('action_ts')}" for a in _actions(payload)
    ]
    if not _first_time(keys):
        return _refused("this request was already received (a replay)", click=click, status=409)
    if settings.FIREFLY_SLACK_TEAM_ID and click.team != settings.FIREFLY_SLACK_TEAM_ID:
        return _refused(f"workspace {click.team!r} is not this Firefly's", click=click, status=403)
    kind = payload.get("type")
    if kind == "block_actions":
        return _clicked(payload, click)
    view = _obj(payload.get("view"))
    if kind == "view_submission" and view.get("callback_id") == blocks.REJECT_VIEW:
        return _reject_submitted(view, click)
    # Closing the modal, or anything else the app is sent: nothing to do.
    return Answer()


def _may_record_unsigned() -> bool:
    """Anyone can send an unsigned request: at most FIREFLY_SLACK_REFUSALS_RECORDED_PER_MINUTE
    of them are recorded each minute, so that the endpoint's URL is not a way to flood
    the security events. The rest are logged only."""
    key = f"chat-refusals:{int(time.time() // 60)}"
    if cache.add(key, 1, 120):
        return True
    try:
        count = cache.incr(key)
    except ValueError:  # expired in between
        cache.add(key, 1, 120)
        return True
    return count <= settings.FIREFLY_SLACK_REFUSALS_RECORDED_PER_MINUTE


def _payload(body: bytes) -> dict[str, Any] | None:
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=5)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        return None
    return payload if isinstance(payload, dict) else None


def _obj(value: Any) -> dict[str, Any]:
    """A part of the payload that should be an object ({} when it is not)."""
    return value if isinstance(value, dict) else {}


def _actions(payload: dict[str, Any]) -> list[dict[str, Any]]:
    actions = payload.get("actions")
    return [a for a in actions if isinstance(a, dict)] if isinstance(actions, list) else []


def _channel_of(payload: dict[str, Any]) -> str:
    container, channel = _obj(payload.get("container")), _obj(payload.get("channel"))
    return str(container.get("channel_id") or channel.get("id") or "")


def _first_time(keys: list[str]) -> bool:
    """Record the request's keys; False when any was recorded before (in this or another
    process: the unique key in the database decides, not a cache)."""
    now = timezone.now()
    ChatRequestSeen.objects.filter(seen_at__lt=now - SEEN_FOR).delete()
    try:
        with transaction.atomic():
            ChatRequestSeen.objects.bulk_create(
                [ChatRequestSeen(key=key[:200], seen_at=now) for key in keys]
            )
    except IntegrityError:
        return False
    return True


def _refused(
    reason: str,
    *,
    status: int,
    click: Click | None = None,
    address: str | None = None,
    actor: Any = None,
    task: HumanTask | None = None,
) -> Answer:
    refusal_record(
        event=REFUSED,
        reason=reason,
        actor=actor,
        address=click.address if click else address,
        organization=task.organization_id if task else None,
        slack_user=click.slack_user if click else None,
        slack_team=click.team if click else None,
        task=task.pk if task else None,
    )
    return Answer(status, {"error": reason})


def _tell(click: Click, text: str) -> None:
    if click.channel and click.slack_user:
        slack.say_privately(click.channel, click.slack_user, text)


def _who(click: Click, task_id: int) -> tuple[Any, HumanTask | None, str]:
    """The Firefly user and their task, or why there are none (recorded)."""
    try:
        user = people.firefly_user(click.slack_user, click.team)
    except people.Unmapped as exc:
        _refused(str(exc), click=click, status=403)
        return None, None, str(exc)
    task = HumanTask.objects.filter(pk=task_id).select_related("run").first()
    if task is None or not orgs.is_member(user, task.organization_id):
        why = f"Task {task_id} is not yours to see."
        _refused(why, click=click, actor=user, status=403)
        return user, None, why
    return user, task, ""


def _clicked(payload: dict[str, Any], click: Click) -> Answer:
    actions = _actions(payload)
    named = blocks.read_action_id(str(actions[0].get("action_id", ""))) if actions else None
    if named is None:
        return Answer()
    action, task_id = named
    user, task, why = _who(click, task_id)
    if task is None:
        _tell(click, why)
        return Answer()
    with rls.scoped(task.organization_id):
        if action == blocks.APPROVE:
            _approve(task, user, click)
        elif action == blocks.CHOOSE:
            return _choose(task, user, click, actions[0])
        else:
            _open_reject(task, user, click, str(payload.get("trigger_id") or ""))
    return Answer()


def _chosen(action: dict[str, Any]) -> str | None:
    """The option a click names: a button's value, or a static select's selected option."""
    value = action.get("value")
    if action.get("type") == "static_select":
        value = _obj(action.get("selected_option")).get("value")
    return value if isinstance(value, str) else None


def _choose(task: HumanTask, user: Any, click: Click, action: dict[str, Any]) -> Answer:
    choice = _chosen(action)
    if choice is None:
        return _refused(
            "the click names no option (a value or a selected option)",
            click=click,
            actor=user,
            task=task,
            status=400,
        )
    try:
        services.task_complete(task_id=task.pk, user=user, choice=choice, channel=CHAT)
    except InvalidInput as exc:
        # Not one of the task's options, or not a choice task: no message Firefly posted
        # offers that, so it is recorded as a refused request, not only told.
        _refused(exc.message, click=click, actor=user, task=task, status=400)
        _tell(click, f"Nothing changed: {exc.message}")
    except FireflyError as exc:
        # The service recorded the refusal in the run's audit chain (task.refused).
        _tell(click, f"Nothing changed: {exc.message}")
    return Answer()


def _approve(task: HumanTask, user: Any, click: Click) -> None:
    try:
        decided = services.task_approve(task_id=task.pk, user=user, channel=CHAT)
    except FireflyError as exc:
        # The service recorded the refusal in the run's audit chain (task.refused).
        _tell(click, f"Nothing changed: {exc.message}")
        return
    if decided.is_open:
        votes = decided.decisions.filter(action=Decision.Action.APPROVE).count()
        _tell(click, f"Your approval is recorded ({votes} of {decided.quorum} needed).")


def _open_reject(task: HumanTask, user: Any, click: Click, trigger_id: str) -> None:
    refusal = guards.refusal_now(task, user, Decision.Action.REJECT)
    if refusal is not None:
        reason = getattr(refusal, "message", str(refusal))
        _refused(reason, click=click, actor=user, task=task, status=403)
        _tell(click, f"Nothing changed: {reason}")
        return
    modal = blocks.reject_modal(task, {"task": task.pk})
    try:
        slack.call("views.open", trigger_id=trigger_id, view=modal)
    except slack.SlackError as exc:
        _tell(click, f"Could not open the reject form ({exc}); reject on the task's page.")


def _reject_submitted(view: dict[str, Any], click: Click) -> Answer:
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
        task_id = int(metadata["task"])
        values = view["state"]["values"]
        reason = str(values[blocks.REASON_BLOCK][blocks.REASON_INPUT].get("value") or "")
    except (ValueError, KeyError, TypeError) as exc:
        return _refused(
            f"the reject form is not one Firefly opened ({exc})", click=click, status=400
        )
    user, task, why = _who(click, task_id)
    if task is None:
        return _form_error(why)
    with rls.scoped(task.organization_id):
        try:
            services.task_reject(task_id=task.pk, user=user, comment=reason, channel=CHAT)
        except FireflyError as exc:
            # In the modal itself: a private answer, and the form stays open to cancel.
            return _form_error(exc.message)
    return Answer()


def _form_error(message: str) -> Answer:
    return Answer(200, {"response_action": "errors", "errors": {blocks.REASON_BLOCK: message}})
