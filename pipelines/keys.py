"""The audit HMAC keys by id: the current one signs, older ones still verify."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings


class UnknownKey(ValueError):
    """No configured key has this id."""


def _keys() -> dict[str, bytes]:
    return {"default": settings.FIREFLY_AUDIT_KEY.encode()}


def current() -> tuple[str, bytes]:
    return "default", _keys()["default"]


def get(key_id: str) -> bytes:
    try:
        return _keys()[key_id]
    except KeyError:
        raise UnknownKey(f"unknown audit key id {key_id!r}") from None


def sign(payload: bytes, key_id: str | None = None) -> tuple[str, str]:
    kid, key = current() if key_id is None else (key_id, get(key_id))
    return kid, hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(payload: bytes, key_id: str, signature: str) -> bool:
    return hmac.compare_digest(sign(payload, key_id)[1], signature)
