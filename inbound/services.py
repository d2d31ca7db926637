"""Managing inbound hooks: create, change, rotate the secret, delete.

Who may: the admins of the pipeline's organization (`manage_organization`), the
strictest of the rules in pipelines/permissions.py. A hook lets whoever holds its secret
start runs without any grant on the pipeline, so it is an organization admin's decision,
as outbound webhooks and API tokens are. `actor` None is Firefly itself (commands).
Each change is an entry in the pipeline's audit chain, in the change's transaction;
each refusal is recorded (SecurityEvent) outside it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from inbound.models import InboundHook, new_secret
from orgs import selectors as orgs
from pipelines import permissions
from pipelines.errors import InvalidInput, NotFound, PermissionDenied
from pipelines.models import Pipeline
from pipelines.security import refusal_record
from pipelines.services import pipeline_audit
from webhooks import crypto

# What a caller may set on a hook (the rest is generated or derived).
SETTABLE = (
    "signature_format",
    "signature_header",
    "replay_window_s",
    "max_body_bytes",
    "input_mapping",
    "delivery_id_header",
    "delivery_id_path",
    "rate_limit",
    "enabled",
)


def may_manage(actor: Any, organization_id: int) -> bool:
    return actor is None or permissions.allowed(actor, "manage_organization", organization_id)


def _refuse(actor: Any, organization_id: int, pipeline: str, action: str, address: Any) -> None:
    reason = "only the organization's admins manage inbound hooks"
    refusal_record(
        event="inbound_hook.refused",
        reason=reason,
        actor=actor,
        address=address,
        organization=organization_id,
        pipeline=pipeline,
        action=action,
    )
    raise PermissionDenied("Only the organization's admins manage a pipeline's inbound hooks.")


def _pipeline(organization_id: int, name: str, *, lock: bool = False) -> Pipeline:
    found = Pipeline.objects.filter(organization_id=organization_id, name=name)
    row = (found.select_for_update() if lock else found).first()
    if row is None:
        raise NotFound(f"No pipeline {name!r}.")
    return row


def _audited(pipeline: Pipeline, event: str, *, actor: Any, data: dict[str, Any]) -> None:
    """An entry in the pipeline's own chain; the caller holds the pipeline's row lock."""
    pipeline_audit(pipeline, [(event, actor, data)])


def _described(hook: InboundHook) -> dict[str, Any]:
    # What the audit keeps of a hook: never its secret or its token.
    return {
        "hook": hook.pk,
        "name": hook.name,
        **{field: getattr(hook, field) for field in SETTABLE},
    }


def _checked(hook: InboundHook) -> None:
    """The model's validators, as one InvalidInput naming each field."""
    try:
        hook.full_clean(exclude=["organization", "pipeline", "created_by"])
    except ValidationError as exc:
        details = [
            {"field": "" if field == "__all__" else field, "message": " ".join(messages)}
            for field, messages in exc.message_dict.items()
        ]
        summary = "; ".join(f"{d['field'] or 'hook'}: {d['message']}" for d in details)
        raise InvalidInput(f"Invalid inbound hook: {summary}", details=details) from None


def hook_create(
    *,
    pipeline: str,
    name: str,
    actor: Any = None,
    organization: Any = None,
    address: str | None = None,
    secret: str = "",
    **fields: Any,
) -> InboundHook:
    """A hook on `pipeline` of `organization` (None: the default one). The returned
    instance carries the secret's plaintext in `new_secret`, the one time it is shown."""
    org_id = orgs.pk_of(organization)
    if not may_manage(actor, org_id):
        _refuse(actor, org_id, pipeline, "create", address)
    unknown = set(fields) - set(SETTABLE)
    if unknown:
        raise InvalidInput(f"Unknown inbound hook fields: {', '.join(sorted(unknown))}.")
    plaintext = secret or new_secret()
    with transaction.atomic():
        found = _pipeline(org_id, pipeline, lock=True)
        hook = InboundHook(
            organization_id=org_id,
            pipeline=found,
            name=name,
            secret_encrypted=crypto.encrypt(plaintext),
            created_by=actor,
            **fields,
        )
        _checked(hook)
        if InboundHook.objects.filter(pipeline=found, name=name).exists():
            raise InvalidInput(
                f"Pipeline {pipeline!r} already has an inbound hook named {name!r}.",
                details=[{"field": "name", "message": "already used on this pipeline"}],
            )
        hook.save()
        _audited(found, "inbound_hook.created", actor=actor, data=_described(hook))
    hook.new_secret = plaintext
    return hook


def _locked(hook_id: int, organization_id: int | None) -> InboundHook:
    found = InboundHook.objects.select_for_update().select_related("pipeline")
    if organization_id is not None:
        found = found.filter(organization_id=organization_id)
    hook = found.filter(pk=hook_id).first()
    if hook is None:
        raise NotFound(f"No inbound hook {hook_id}.")
    return hook


def _organization_of(hook_id: int) -> int:
    org_id = InboundHook.objects.filter(pk=hook_id).values_list("organization_id", flat=True)
    found = org_id.first()
    if found is None:
        raise NotFound(f"No inbound hook {hook_id}.")
    return found


def hook_update(
    *, hook_id: int, actor: Any = None, address: str | None = None, **fields: Any
) -> InboundHook:
    """Change a hook's settings (not its name, pipeline, token or secret)."""
    org_id = _organization_of(hook_id)
    if not may_manage(actor, org_id):
        _refuse(actor, org_id, "", "update", address)
    unknown = set(fields) - set(SETTABLE)
    if unknown:
        raise InvalidInput(f"Unknown inbound hook fields: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        pipeline = Pipeline.objects.select_for_update().get(inbound_hooks__pk=hook_id)
        hook = _locked(hook_id, org_id)
        for field, value in fields.items():
            setattr(hook, field, value)
        _checked(hook)
        hook.save(update_fields=list(fields))
        _audited(pipeline, "inbound_hook.changed", actor=actor, data=_described(hook))
    return hook


def hook_secret_rotate(
    *, hook_id: int, actor: Any = None, address: str | None = None
) -> InboundHook:
    """A new secret, shown once; the one it replaces is still accepted for
    FIREFLY_INBOUND_SECRET_GRACE_S, so the sender can switch over at any time in between.
    Rotating again within the grace period drops the oldest secret at once."""
    org_id = _organization_of(hook_id)
    if not may_manage(actor, org_id):
        _refuse(actor, org_id, "", "rotate", address)
    plaintext = new_secret()
    grace = timedelta(seconds=settings.FIREFLY_INBOUND_SECRET_GRACE_S)
    with transaction.atomic():
        pipeline = Pipeline.objects.select_for_update().get(inbound_hooks__pk=hook_id)
        hook = _locked(hook_id, org_id)
        hook.previous_secret_encrypted = hook.secret_encrypted
        hook.previous_secret_until = timezone.now() + grace if grace else None
        hook.secret_encrypted = crypto.encrypt(plaintext)
        hook.save(
            update_fields=["secret_encrypted", "previous_secret_encrypted", "previous_secret_until"]
        )
        _audited(
            pipeline,
            "inbound_hook.secret_rotated",
            actor=actor,
            data={"hook": hook.pk, "name": hook.name, "grace_s": int(grace.total_seconds())},
        )
    hook.new_secret = plaintext
    return hook


def hook_delete(*, hook_id: int, actor: Any = None, address: str | None = None) -> None:
    """Delete a hook and its delivery records; its URL answers 404 from then on. The
    runs it started keep the hook's id and name in their `run.created` entries."""
    org_id = _organization_of(hook_id)
    if not may_manage(actor, org_id):
        _refuse(actor, org_id, "", "delete", address)
    with transaction.atomic():
        pipeline = Pipeline.objects.select_for_update().get(inbound_hooks__pk=hook_id)
        hook = _locked(hook_id, org_id)
        deliveries = hook.deliveries.count()
        data = {**_described(hook), "deliveries": deliveries}
        hook.delete()
        _audited(pipeline, "inbound_hook.deleted", actor=actor, data=data)


def hook_secrets(hook: InboundHook) -> list[str]:
    """The secrets a delivery may be signed with now: the current one, and the one a
    rotation replaced while it is in its grace period. Raises crypto.Undecryptable."""
    found = [crypto.decrypt(hook.secret_encrypted)]
    until = hook.previous_secret_until
    if hook.previous_secret_encrypted and until is not None and until > timezone.now():
        found.append(crypto.decrypt(hook.previous_secret_encrypted))
    return found
