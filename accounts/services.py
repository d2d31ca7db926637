"""Organization administration: members, pipeline grants, who sees a pipeline, webhooks.

Only the organization's admins (and superusers) may call these. Each change is one
transaction with its record: grants and member roles as entries of the pipeline's audit
chain, membership changes as security events. Each refusal is recorded too; an object of
another organization is answered as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from orgs import selectors as orgs
from orgs.models import Membership, Organization
from pipelines import permissions
from pipelines.errors import Conflict, FireflyError, InvalidInput, NotFound, PermissionDenied
from pipelines.models import Pipeline, PipelineGrant, PipelineRole, SecurityEvent
from pipelines.security import refusal_record
from pipelines.services import pipeline_audit
from webhooks.models import Webhook

MEMBER_ROLES = [str(role) for role in Membership.Role]
PIPELINE_ROLES = [str(role) for role in PipelineRole]


# --- guards and records ---------------------------------------------------------------


@contextmanager
def _refusals_recorded(
    action: str, *, actor: Any, organization: Any, address: str | None, **data: Any
) -> Iterator[None]:
    """Record any refusal raised inside, after its transaction rolled back (so the record
    stays), then let it through to the caller."""
    try:
        yield
    except FireflyError as exc:
        refusal_record(
            event="organization.refused",
            reason=exc.message,
            actor=actor,
            address=address,
            organization=getattr(organization, "pk", organization),
            action=action,
            **data,
        )
        raise


def _administered(actor: Any, organization: Any, doing: str, target: Any = None) -> Organization:
    """The organization, if the actor administers it. A member who does not is refused
    (403); anyone else is told it does not exist (404). `target` is (model, filters) of
    the object acted on: one outside the organization is a 404 before any role is
    checked, so a refusal never confirms that another organization's id exists."""
    org_id = getattr(organization, "pk", organization)
    if target is not None:
        model, filters = target
        if (
            org_id is None
            or not model.objects.filter(**filters, **{_org_path(model): org_id}).exists()
        ):
            raise NotFound(f"No such {model._meta.verbose_name} in this organization.")
    org = Organization.objects.filter(pk=org_id).first() if org_id is not None else None
    if org is not None and permissions.allowed(actor, "manage_organization", org):
        return org
    if org is not None and orgs.is_member(actor, org.pk):
        raise PermissionDenied(f"Only the organization's admins may {doing}.")
    raise NotFound("No such organization.")


def _org_path(model: Any) -> str:
    return "pipeline__organization_id" if model is PipelineGrant else "organization_id"


def _changed(
    org: Organization, event: str, reason: str, *, actor: Any, address: str | None, **data: Any
) -> None:
    """A membership change, recorded in the same transaction as the change."""
    SecurityEvent.objects.create(
        organization=org,
        event=event,
        actor=actor,
        actor_name=actor.get_username()[:150],
        address=address or None,
        reason=reason,
        data=data or None,
    )


def _choice(value: Any, allowed: list[str], what: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"{what} must be one of {', '.join(allowed)}; got {value!r}.")
    return str(value)


def _forget(actor: Any, user: Any) -> None:
    """Drop cached roles of whoever changed, so the rest of the request sees the change."""
    permissions.forget(user)
    if actor is not None and user is not None and actor.pk == user.pk:
        permissions.forget(actor)


def _other_admin_exists(org: Organization, membership: Membership) -> bool:
    return (
        Membership.objects.filter(
            organization=org, role=Membership.Role.ADMIN, user__is_active=True
        )
        .exclude(pk=membership.pk)
        .exists()
    )


# --- members --------------------------------------------------------------------------


def membership_add(
    *, organization: Any, username: str, role: str, actor: Any, address: str | None = None
) -> Membership:
    """Add an existing user to the organization with `role`."""
    username = (username or "").strip()
    with _refusals_recorded(
        "membership_add", actor=actor, organization=organization, address=address, target=username
    ):
        org = _administered(actor, organization, "add members")
        role = _choice(role, MEMBER_ROLES, "role")
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise InvalidInput(f"No active user named {username!r}.")
        with transaction.atomic():
            Organization.objects.select_for_update().get(pk=org.pk)
            membership, created = Membership.objects.get_or_create(
                user=user, organization=org, defaults={"role": role}
            )
            if not created:
                raise Conflict(
                    f"{username} is already a member (as {membership.role}); change their"
                    " role instead."
                )
            _changed(
                org,
                "membership.added",
                f"{username} added as {role}",
                actor=actor,
                address=address,
                user=user.pk,
                role=role,
            )
    _forget(actor, user)
    return membership


def _membership_locked(org: Organization, membership_id: int) -> Membership:
    # The organization row is locked first: membership changes of one organization run
    # one at a time, so two admins cannot demote each other into having none.
    Organization.objects.select_for_update().get(pk=org.pk)
    membership = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(pk=membership_id, organization=org)
        .first()
    )
    if membership is None:
        raise NotFound(f"No member {membership_id} in this organization.")
    return membership


def membership_set_role(
    *,
    organization: Any,
    membership_id: int,
    role: str,
    actor: Any,
    address: str | None = None,
) -> Membership:
    """Change a member's role; the last admin keeps theirs."""
    with _refusals_recorded(
        "membership_set_role",
        actor=actor,
        organization=organization,
        address=address,
        membership=membership_id,
    ):
        org = _administered(
            actor, organization, "change roles", (Membership, {"pk": membership_id})
        )
        role = _choice(role, MEMBER_ROLES, "role")
        with transaction.atomic():
            membership = _membership_locked(org, membership_id)
            previous = membership.role
            demoted = previous == Membership.Role.ADMIN and role != previous
            if demoted and not _other_admin_exists(org, membership):
                raise Conflict("The organization's last admin stays an admin.")
            if role != previous:
                Membership.objects.filter(pk=membership.pk).update(role=role)
                membership.role = role
                _changed(
                    org,
                    "membership.role_changed",
                    f"{membership.user.get_username()}: {previous} -> {role}",
                    actor=actor,
                    address=address,
                    user=membership.user_id,
                    role=role,
                    previous=previous,
                )
    _forget(actor, membership.user)
    return membership


def membership_remove(
    *, organization: Any, membership_id: int, actor: Any, address: str | None = None
) -> None:
    """Remove a member and their grants on the organization's pipelines; never the last
    admin."""
    with _refusals_recorded(
        "membership_remove",
        actor=actor,
        organization=organization,
        address=address,
        membership=membership_id,
    ):
        org = _administered(
            actor, organization, "remove members", (Membership, {"pk": membership_id})
        )
        with transaction.atomic():
            membership = _membership_locked(org, membership_id)
            if membership.role == Membership.Role.ADMIN and not _other_admin_exists(
                org, membership
            ):
                raise Conflict("The organization's last admin cannot be removed.")
            user = membership.user
            # Grants mean nothing without the membership; dropped so that adding the
            # user again later does not bring them back unnoticed.
            grants = PipelineGrant.objects.filter(user=user, pipeline__organization=org)
            for grant in grants.select_related("pipeline").order_by("pipeline_id"):
                _grant_delete(grant, actor=actor, why="member removed")
            membership.delete()
            _changed(
                org,
                "membership.removed",
                f"{user.get_username()} removed (was {membership.role})",
                actor=actor,
                address=address,
                user=user.pk,
                previous=membership.role,
            )
    _forget(actor, user)


# --- pipelines ------------------------------------------------------------------------


def _pipeline_in(org: Organization, pipeline: Any, *, lock: bool = False) -> Pipeline:
    pipeline_id = getattr(pipeline, "pk", pipeline)
    found = Pipeline.objects.filter(pk=pipeline_id, organization=org)
    if lock:
        found = found.select_for_update()
    row = found.first()
    if row is None:
        raise NotFound(f"No pipeline {pipeline_id} in this organization.")
    return row


def _audited(pipeline: Pipeline, event: str, *, actor: Any, data: dict[str, Any]) -> None:
    """An entry in the pipeline's own chain; the caller holds the pipeline's row lock."""
    pipeline_audit(pipeline, [(event, actor, data)])


def _grant_delete(grant: PipelineGrant, *, actor: Any, why: str) -> None:
    pipeline = Pipeline.objects.select_for_update().get(pk=grant.pipeline_id)
    holder: dict[str, str] = (
        {"user": grant.user.get_username()}
        if grant.user is not None
        else {"group": grant.group.name if grant.group is not None else ""}
    )
    grant.delete()
    _audited(
        pipeline,
        "pipeline.grant_removed",
        actor=actor,
        data={**holder, "role": grant.role, "why": why},
    )


def grant_set(
    *,
    organization: Any,
    pipeline: Any,
    role: str,
    actor: Any,
    username: str = "",
    group: str = "",
    address: str | None = None,
) -> PipelineGrant:
    """Give a member (`username`) or a group (`group`) `role` on the pipeline, replacing
    the role they held there."""
    username, group = (username or "").strip(), (group or "").strip()
    with _refusals_recorded(
        "grant_set",
        actor=actor,
        organization=organization,
        address=address,
        pipeline=getattr(pipeline, "pk", pipeline),
        target=username or group,
        role=str(role),
    ):
        org = _administered(
            actor,
            organization,
            "grant roles on pipelines",
            (Pipeline, {"pk": getattr(pipeline, "pk", pipeline)}),
        )
        role = _choice(role, PIPELINE_ROLES, "role")
        if bool(username) == bool(group):
            raise InvalidInput("Name either a user or a group to grant the role to.")
        holder: dict[str, Any]
        user = None
        if username:
            user = (
                get_user_model()
                .objects.filter(username=username, memberships__organization=org, is_active=True)
                .first()
            )
            if user is None:
                raise InvalidInput(f"{username!r} is not a member of this organization.")
            holder = {"user": user}
        else:
            found = Group.objects.filter(name=group).first()
            if found is None:
                raise InvalidInput(f"No group named {group!r}.")
            holder = {"group": found}
        with transaction.atomic():
            locked = _pipeline_in(org, pipeline, lock=True)
            grant, created = PipelineGrant.objects.get_or_create(
                pipeline=locked, **holder, defaults={"role": role}
            )
            previous = "" if created else grant.role
            if previous != role:
                if not created:
                    PipelineGrant.objects.filter(pk=grant.pk).update(role=role)
                    grant.role = role
                _audited(
                    locked,
                    "pipeline.grant_set",
                    actor=actor,
                    data={
                        ("user" if user else "group"): username or group,
                        "role": role,
                        "previous": previous,
                    },
                )
    if user is not None:
        _forget(actor, user)
    return grant


def grant_remove(
    *, organization: Any, grant_id: int, actor: Any, address: str | None = None
) -> None:
    with _refusals_recorded(
        "grant_remove", actor=actor, organization=organization, address=address, grant=grant_id
    ):
        org = _administered(actor, organization, "remove grants", (PipelineGrant, {"pk": grant_id}))
        with transaction.atomic():
            grant = (
                PipelineGrant.objects.select_related("user", "group")
                .filter(pk=grant_id, pipeline__organization=org)
                .first()
            )
            if grant is None:
                raise NotFound(f"No grant {grant_id} in this organization.")
            user = grant.user
            _grant_delete(grant, actor=actor, why="removed")
    if user is not None:
        _forget(actor, user)


def pipeline_set_member_role(
    *, organization: Any, pipeline: Any, role: str, actor: Any, address: str | None = None
) -> Pipeline:
    """The role every member holds on the pipeline; "" keeps it to its author, its grants
    and the admins."""
    with _refusals_recorded(
        "pipeline_set_member_role",
        actor=actor,
        organization=organization,
        address=address,
        pipeline=getattr(pipeline, "pk", pipeline),
        role=str(role),
    ):
        org = _administered(
            actor,
            organization,
            "change who sees a pipeline",
            (Pipeline, {"pk": getattr(pipeline, "pk", pipeline)}),
        )
        role = _choice(role, ["", *PIPELINE_ROLES], "member role")
        with transaction.atomic():
            locked = _pipeline_in(org, pipeline, lock=True)
            previous = locked.member_role
            if previous != role:
                Pipeline.objects.filter(pk=locked.pk).update(member_role=role)
                locked.member_role = role
                _audited(
                    locked,
                    "pipeline.member_role_set",
                    actor=actor,
                    data={"role": role, "previous": previous},
                )
    permissions.forget(actor)
    return locked


# --- webhooks -------------------------------------------------------------------------


def webhook_deactivate(
    *, organization: Any, webhook_id: int, actor: Any, address: str | None = None
) -> None:
    """Stop a webhook's deliveries (it stays, with its log, and may be turned on again in
    Django admin)."""
    with _refusals_recorded(
        "webhook_deactivate",
        actor=actor,
        organization=organization,
        address=address,
        webhook=webhook_id,
    ):
        org = _administered(actor, organization, "manage webhooks", (Webhook, {"pk": webhook_id}))
        with transaction.atomic():
            webhook = (
                Webhook.objects.select_for_update().filter(pk=webhook_id, organization=org).first()
            )
            if webhook is None:
                raise NotFound(f"No webhook {webhook_id} in this organization.")
            if webhook.active:
                Webhook.objects.filter(pk=webhook.pk).update(active=False)
                _changed(
                    org,
                    "webhook.deactivated",
                    f"webhook {webhook.pk} ({webhook.url}) deactivated",
                    actor=actor,
                    address=address,
                    webhook=webhook.pk,
                )
