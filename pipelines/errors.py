"""Errors raised by Firefly's services; each maps to one HTTP status and error code."""

from __future__ import annotations

from typing import Any

import psycopg
from django import db

# The database went away under a call (a restart, a failover, a cut connection): nothing
# of the call's transaction committed, or all of it did and only the answer was lost.
DATABASE_GONE: tuple[type[Exception], ...] = (
    db.OperationalError,
    db.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


class FireflyError(Exception):
    """A refusal with a message meant for the person who asked."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(FireflyError):
    """The request is malformed; `details` lists each problem with where it is."""

    code = "invalid"
    http_status = 400


class SpecError(InvalidInput):
    """A pipeline spec failed validation; `details` holds {step, field, message} items."""

    code = "invalid_spec"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        lines = []
        for error in errors:
            where = ".".join(
                p
                for p in (error.get("step") and f"steps[{error['step']}]", error.get("field"))
                if p
            )
            lines.append(f"{where}: {error['message']}" if where else error["message"])
        super().__init__("Invalid pipeline spec:\n  " + "\n  ".join(lines), details=errors)
        self.errors = errors


class NotFound(FireflyError):
    code = "not_found"
    http_status = 404


class PermissionDenied(FireflyError):
    code = "forbidden"
    http_status = 403


class Conflict(FireflyError):
    """The object's current state forbids the action (a finished run, a decided task)."""

    code = "conflict"
    http_status = 409


class IdempotencyKeyReused(FireflyError):
    """An Idempotency-Key came back with another request than the one it first carried."""

    code = "idempotency_key_reused"
    http_status = 422
