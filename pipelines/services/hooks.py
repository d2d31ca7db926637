"""Extension points of the run services, filled by apps in their AppConfig.ready()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Called in the transaction that pauses a step (the approvals app opens a task there),
# and in the one that cancels waiting steps (the approvals app cancels their tasks).
pause_hooks: list[Callable[..., None]] = []
cancel_hooks: list[Callable[..., None]] = []

# What can outlive a run: name -> callable(run_id) returning a list of small dicts.
unsettled_sources: dict[str, Callable[[int], list[dict[str, Any]]]] = {}


def on_pause(hook: Callable[..., None]) -> None:
    """Call `hook(txn=, step_run=, reason=)` when a step pauses for people."""
    if hook not in pause_hooks:  # ready() may run again (tests, reloads): once is enough
        pause_hooks.append(hook)


def on_cancel(hook: Callable[..., None]) -> None:
    """Call `hook(txn=, step_run_ids=)` when waiting steps are cancelled or rolled back."""
    if hook not in cancel_hooks:
        cancel_hooks.append(hook)


def unsettled_source(name: str, source: Callable[[int], list[dict[str, Any]]]) -> None:
    """Count `source(run_id)` among a run's unsettled work, under `name`."""
    unsettled_sources[name] = source


# Retention (pipelines/services/retention.py): rows other apps keep about runs.
# `erase(run_ids)` empties their data in the erasing transaction; `purge(run_ids)` deletes
# them before the runs' own rows go.
erase_hooks: list[Callable[[list[int]], None]] = []
purge_hooks: list[Callable[[list[int]], None]] = []


def on_erase(hook: Callable[[list[int]], None]) -> None:
    """Call `hook(run_ids)` when those runs' data is erased (redacted)."""
    if hook not in erase_hooks:
        erase_hooks.append(hook)


def on_purge(hook: Callable[[list[int]], None]) -> None:
    """Call `hook(run_ids)` before those runs' rows are deleted."""
    if hook not in purge_hooks:
        purge_hooks.append(hook)
