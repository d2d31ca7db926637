"""Row-level security on PostgreSQL: the organization a request or task's queries see."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection

from firefly_site.sql import fetch_one

log = logging.getLogger(__name__)

# Made by orgs/migrations/0003_row_level_security.py: no login, no BYPASSRLS, and the
# privileges of the application's tables. Sessions switch to it while they act for a
# tenant, because the policies spare superusers (and, without FORCE, owners).
ROLE = "firefly_tenant"

# No organization has this id: a user of no organization sees no tenant row at all.
NOBODY = 0

# Session-level (not SET LOCAL): a request is not one transaction, and its autocommit
# queries must all be held. leave() undoes it, so a kept connection carries nothing to
# the next request or task. The role is taken only if the login role may take it.
_ENTER = """
SELECT set_config('firefly.organization', %s, false),
       (SELECT set_config('role', rolname, false) FROM pg_roles
        WHERE rolname = %s AND pg_has_role(session_user, oid, 'MEMBER'))
"""
_ENTER_ROW = """
SELECT set_config('firefly.organization',
                  coalesce((SELECT organization_id FROM {table} WHERE id = %s), %s)::text,
                  false),
       (SELECT set_config('role', rolname, false) FROM pg_roles
        WHERE rolname = %s AND pg_has_role(session_user, oid, 'MEMBER'))
"""
_LEAVE = "SELECT set_config('role', 'none', false), set_config('firefly.organization', '', false)"

# What this process last set on its connection (None: nothing, Firefly itself).
_SCOPE = "firefly_scope"


def active() -> bool:
    """FIREFLY_RLS is on and the database is PostgreSQL (SQLite has no policies)."""
    return bool(settings.FIREFLY_RLS) and connection.vendor == "postgresql"


def current() -> int | None:
    """The organization this connection's queries are held to (None: not held)."""
    return getattr(connection, _SCOPE, None)


def held_to(user: Any, organization: Any) -> int | None:
    """The organization a user's queries are held to: theirs, NOBODY for a user of none,
    None (not held) for visitors and superusers, who are Firefly's operators."""
    if not getattr(user, "is_authenticated", False) or user.is_superuser:
        return None
    return NOBODY if organization is None else int(getattr(organization, "pk", organization))


def enter(organization_id: int | None) -> None:
    """Hold the connection's queries to one organization; None lets go of any."""
    if not active():
        return
    if organization_id is None:
        leave()
        return
    fetch_one(_ENTER, [str(int(organization_id)), ROLE])
    setattr(connection, _SCOPE, int(organization_id))


def enter_row(table: str, pk: Any) -> None:
    """Hold the connection to the organization of one row (NOBODY if there is none), read
    in the same statement: a task knows its run or delivery only by id."""
    if not active():
        return
    sql = _ENTER_ROW.format(table=connection.ops.quote_name(table))
    row = fetch_one(sql, [pk, NOBODY, ROLE])
    assert row is not None
    setattr(connection, _SCOPE, int(row[0]))


def leave() -> None:
    """Back to Firefly itself: the login role, no organization."""
    if current() is None:
        return
    setattr(connection, _SCOPE, None)
    try:
        fetch_one(_LEAVE, [])
    except DatabaseError:
        # A broken connection, or one whose transaction failed: closing it is the one way
        # to be sure the next request or task on this thread does not inherit the scope.
        log.warning("could not reset the organization of a connection; closing it")
        connection.close()


@contextmanager
def scoped(organization_id: int | None) -> Iterator[None]:
    """Queries inside see one organization's rows; the scope before comes back after."""
    before = current()
    enter(organization_id)
    try:
        yield
    finally:
        enter(before)
