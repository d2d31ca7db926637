"""In-process event stream: listeners called after commit with (event, payload)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)

# Events: run.finished (payload has its status; run.failed is sent as well for failed
# runs). Webhooks and other integrations register here.
Listener = Callable[[str, dict[str, Any]], None]
listeners: list[Listener] = []


def emit_after_commit(event: str, payload: dict[str, Any]) -> None:
    if listeners:
        transaction.on_commit(lambda: emit(event, payload))


def emit(event: str, payload: dict[str, Any]) -> None:
    for listener in listeners:
        try:
            listener(event, payload)
        except Exception:
            # A listener's failure is its own: it never affects the run that emitted.
            log.exception("listener %r failed on %s %s", listener, event, payload.get("run"))
