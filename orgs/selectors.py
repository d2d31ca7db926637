"""Who belongs where: a user's organizations and roles, read once per request."""

from __future__ import annotations

from typing import Any

from orgs.models import Membership, Organization

ADMIN = Membership.RANK[Membership.Role.ADMIN]
AUTHOR = Membership.RANK[Membership.Role.AUTHOR]
MEMBER = Membership.RANK[Membership.Role.MEMBER]


def _is_person(user: Any) -> bool:
    return user is not None and bool(getattr(user, "is_authenticated", False))


def memberships(user: Any) -> dict[int, tuple[Organization, int]]:
    """{organization id: (organization, rank)} of the user's memberships; one query, kept
    on the user object for the rest of the request (or task)."""
    if not _is_person(user) or not user.is_active:
        return {}
    cached = getattr(user, "_firefly_memberships", None)
    if cached is None:
        rows = Membership.objects.filter(user=user).select_related("organization")
        cached = {m.organization_id: (m.organization, m.rank) for m in rows}
        user._firefly_memberships = cached
    return cached


def forget(user: Any) -> None:
    """Drop the cached memberships (after they changed in this request)."""
    if user is not None and hasattr(user, "_firefly_memberships"):
        del user._firefly_memberships


def rank_in(user: Any, organization_id: int | None) -> int:
    """The user's organization role as a rank (0: not a member). Superusers are platform
    operators: an admin's rank in every organization."""
    if organization_id is None or not _is_person(user) or not user.is_active:
        return 0
    if user.is_superuser:
        return ADMIN
    found = memberships(user).get(organization_id)
    return found[1] if found else 0


def is_member(user: Any, organization_id: int | None) -> bool:
    return rank_in(user, organization_id) >= MEMBER


def is_admin(user: Any, organization_id: int | None) -> bool:
    return rank_in(user, organization_id) >= ADMIN


def is_author(user: Any, organization_id: int | None) -> bool:
    return rank_in(user, organization_id) >= AUTHOR


def organizations_of(user: Any) -> list[Organization]:
    """The organizations the user may switch to, by name (superusers: all of them)."""
    if not _is_person(user) or not user.is_active:
        return []
    if user.is_superuser:
        return list(Organization.objects.order_by("name"))
    return sorted((org for org, _ in memberships(user).values()), key=lambda o: o.name)


def administered(user: Any) -> list[int]:
    """Ids of the organizations the user administers (superusers: every one)."""
    if user.is_superuser:
        return list(Organization.objects.values_list("pk", flat=True))
    return [pk for pk, (_, rank) in memberships(user).items() if rank >= ADMIN]


def resolve(user: Any, wanted: str | int | None) -> Organization | None:
    """The organization a request acts in: `wanted` (a slug or id) when the user belongs
    to it, else their first organization by name; None when they belong to none.

    A user who asks for an organization they do not belong to gets None, never it: the
    caller answers as if it did not exist.
    """
    if not _is_person(user) or not user.is_active:
        return None
    mine = memberships(user)
    if wanted not in (None, ""):
        for org, _ in mine.values():
            if str(wanted) in (org.slug, str(org.pk)):
                return org
        if user.is_superuser:
            lookup = {"pk": int(wanted)} if str(wanted).isdigit() else {"slug": wanted}
            return Organization.objects.filter(**lookup).first()
        return None
    if mine:
        return min((org for org, _ in mine.values()), key=lambda o: (o.name, o.pk))
    if user.is_superuser:
        return Organization.objects.default()
    return None


def pk_of(organization: Any) -> int:
    """An organization's id from the organization, its id, or None (the default one)."""
    if organization is None:
        return Organization.objects.default().pk
    return int(getattr(organization, "pk", organization))


_slugs: dict[int, str] = {}


def slug_of(organization_id: int) -> str:
    """An organization's slug, read once per process (slugs never change: admin shows
    them read-only after creation), for event payloads."""
    slug = _slugs.get(organization_id)
    if slug is None:
        slug = Organization.objects.values_list("slug", flat=True).get(pk=organization_id)
        _slugs[organization_id] = slug
    return slug
