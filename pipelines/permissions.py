"""Who may operate a run: one rule for the services, the pages and the API."""

from __future__ import annotations

from typing import Any

from pipelines.models import Run

# How far up a run's forks and handoffs separation of duties looks; lineages are short,
# this only bounds a loop over rows an attacker could not make circular anyway.
MAX_LINEAGE = 100


def is_person(actor: Any) -> bool:
    """An authenticated user; None is Firefly itself (the reaper, on_finish, a parent run)."""
    return actor is not None and bool(getattr(actor, "is_authenticated", False))


def may_operate(actor: Any, run: Run) -> bool:
    """Cancel, resume or fork a run, or acknowledge its handoffs: staff, superusers and
    whoever started it; and Firefly itself (actor None). Everyone else is refused."""
    if actor is None:
        return True
    if not is_person(actor):
        return False
    return bool(actor.is_staff or actor.is_superuser or run.created_by_id == actor.pk)


def lineage_starters(run: Run) -> set[int]:
    """Who started this run or any run it descends from (forks and handoffs).

    Separation of duties checks them all: forking your own approved run, or handing
    work to another pipeline, must not make you the approver of your own change.
    """
    starters = {run.created_by_id} - {None}
    pending = [pk for pk in (run.forked_from_id, run.parent_id) if pk is not None]
    seen: set[int] = set()
    while pending and len(seen) < MAX_LINEAGE:
        pk = pending.pop()
        if pk in seen:
            continue
        seen.add(pk)
        row = (
            Run.objects.filter(pk=pk)
            .values_list("created_by_id", "forked_from_id", "parent_id")
            .first()
        )
        if row is None:
            continue
        created_by, forked_from, parent = row
        if created_by is not None:
            starters.add(created_by)
        pending.extend(p for p in (forked_from, parent) if p is not None)
    return starters  # type: ignore[return-value]
