"""Token writes: create (the key is returned once), revoke, and the last-used mark."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from orgs import selectors as orgs
from pipelines.errors import NotFound, PermissionDenied
from pipelines.security import refusal_record
from tokens.models import ApiToken, new_token_key, token_hash

# Marking a token used writes a row; once a minute is enough to tell live tokens from
# forgotten ones, and spares a write on every request.
LAST_USED_EVERY = timedelta(minutes=1)


def default_lifetime() -> timedelta:
    return timedelta(days=settings.FIREFLY_TOKEN_TTL_DAYS)


def token_create(
    *,
    user: Any,
    name: str,
    organization: Any = None,
    expires_in: timedelta | None = None,
    never_expires: bool = False,
) -> tuple[ApiToken, str]:
    """A new token and its key. The key is not stored (only its hash): show it once.

    The token acts in `organization` (None: the default one), which its user must belong
    to. `expires_in` defaults to FIREFLY_TOKEN_TTL_DAYS; a token without an expiry must
    be asked for by `never_expires=True`.
    """
    org_id = orgs.pk_of(organization)
    if not orgs.is_member(user, org_id):
        # Recorded before any transaction of the token's, so the refusal outlives it.
        refusal_record(
            event="token.refused",
            reason="a token acts only in an organization its user belongs to",
            actor=user,
            organization=org_id,
            name=name[:100],
        )
        raise PermissionDenied("A token acts in an organization its user belongs to.")
    prefix, key = new_token_key()
    now = timezone.now()
    if never_expires:
        expires_at = None
    else:
        expires_at = now + (expires_in if expires_in is not None else default_lifetime())
    token = ApiToken.objects.create(
        organization_id=org_id,
        user=user,
        name=name,
        prefix=prefix,
        secret_hash=token_hash(key),
        created_at=now,
        expires_at=expires_at,
    )
    return token, key


def token_revoke(*, token_id: int, actor: Any, address: str | None = None) -> ApiToken:
    """Revoke a token: its owner or an admin of its organization may. Revoking twice
    changes nothing. Anyone else is told it does not exist (and the attempt recorded)."""
    token = ApiToken.objects.filter(pk=token_id).first()
    if token is None:
        raise NotFound(f"No token {token_id}.")
    owner = actor is not None and actor.pk == token.user_id
    if actor is None or not (owner or orgs.is_admin(actor, token.organization_id)):
        # Recorded outside any transaction, so the refusal outlives the request.
        refusal_record(
            event="token.refused",
            reason="only the token's owner and its organization's admins may revoke it",
            actor=actor,
            address=address,
            organization=token.organization_id,
            token=token.pk,
            owner=token.user_id,
        )
        raise NotFound(f"No token {token_id}.")
    # Conditional: the first revocation keeps its time and its author.
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=actor
    )
    token.refresh_from_db()
    return token


def token_mark_used(*, token: ApiToken) -> None:
    """Set `last_used_at`, at most once per LAST_USED_EVERY (one conditional UPDATE)."""
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_EVERY:
        return
    ApiToken.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY), pk=token.pk
    ).update(last_used_at=now)
    token.last_used_at = now
