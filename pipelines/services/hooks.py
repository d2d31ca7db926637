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
