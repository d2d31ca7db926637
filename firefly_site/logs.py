"""Log records as text or JSON lines (`FIREFLY_LOG_FORMAT`), each with what it is about.

`bound(run_id=..., step=...)` puts fields on every record logged inside it, in this
thread or task (a context variable); a Celery task's id is added from Celery's own
state. The JSON formatter (python-json-logger) writes one object per line with
`time`, `level`, `logger`, `message` and those fields, ready for a log shipper.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

# The fields a record may carry, in this order in text logs.
FIELDS = ("run_id", "step", "step_run_id", "task_id", "trace_id")

_context: ContextVar[dict[str, Any] | None] = ContextVar("firefly_log_context", default=None)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add these fields (those that are not None or empty) to every record logged inside."""
    given = {key: value for key, value in fields.items() if value not in (None, "")}
    token = _context.set({**(_context.get() or {}), **given})
    try:
        yield
    finally:
        _context.reset(token)


def _task_id() -> str | None:
    from celery import current_task

    request = getattr(current_task, "request", None) if current_task else None
    return getattr(request, "id", None)


class ContextFilter(logging.Filter):
    """Puts the bound fields and the Celery task id on each record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        if not hasattr(record, "task_id"):
            task_id = _task_id()
            if task_id:
                record.task_id = task_id
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in FIELDS if hasattr(record, key)
        )
        record.context = f" [{context}]" if context else ""
        return True


class JsonFormatter(_JsonFormatter):
    """One JSON object per record: time, level, logger, message, the bound fields, and
    any `extra` the call passed; exceptions as `exc_info` text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        renamed = {"asctime": "time", "levelname": "level", "name": "logger"}
        kwargs.setdefault("rename_fields", renamed)
        kwargs.setdefault("timestamp", False)
        super().__init__(*args, **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("context", None)  # the text form of the fields below
        for key in FIELDS:
            if hasattr(record, key):
                log_data[key] = getattr(record, key)
