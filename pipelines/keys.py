"""The HMAC keys of the audit trail, by key id: which one signs, which ones verify.

`FIREFLY_AUDIT_KEY` is always key id "default" (entries written before key ids are
signed with it). `FIREFLY_AUDIT_KEYS` ("id:key,id:key") adds more; its first key signs
everything new, and every listed key still verifies what it signed. Rotating is adding a
new key in front and keeping the old ones for as long as their entries must verify.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULT_ID = "default"
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,32}$")


class UnknownKey(ValueError):
    """A key id that no configured key has."""


@cache
def _parse(listed: tuple[str, ...], default: str) -> tuple[str, dict[str, bytes]]:
    keys: dict[str, bytes] = {}
    for item in listed:
        key_id, sep, secret = item.partition(":")
        key_id = key_id.strip()
        if not sep or not secret:
            raise ImproperlyConfigured(
                f"FIREFLY_AUDIT_KEYS: {key_id or item!r} has no key; write id:key"
            )
        if not KEY_ID.match(key_id) or key_id == DEFAULT_ID:
            raise ImproperlyConfigured(
                f"FIREFLY_AUDIT_KEYS: key id {key_id!r} must be 1-32 letters, digits, '.', "
                f"'_' or '-', and not {DEFAULT_ID!r} (FIREFLY_AUDIT_KEY's id)"
            )
        if key_id in keys:
            raise ImproperlyConfigured(f"FIREFLY_AUDIT_KEYS: key id {key_id!r} is listed twice")
        if not settings.DEBUG and len(secret.encode()) < settings.SECRET_MIN_BYTES:
            raise ImproperlyConfigured(
                f"FIREFLY_AUDIT_KEYS: key {key_id!r} is shorter than "
                f"{settings.SECRET_MIN_BYTES} bytes"
            )
        keys[key_id] = secret.encode()
    current = next(iter(keys), DEFAULT_ID)
    keys[DEFAULT_ID] = default.encode()
    return current, keys


def _configured() -> tuple[str, dict[str, bytes]]:
    return _parse(tuple(settings.FIREFLY_AUDIT_KEYS), settings.FIREFLY_AUDIT_KEY)


def current() -> tuple[str, bytes]:
    """The id and key that sign new entries and anchors."""
    key_id, keys = _configured()
    return key_id, keys[key_id]


def current_id() -> str:
    return _configured()[0]


def get(key_id: str) -> bytes:
    """The key with this id ('' is "default", for entries written before key ids)."""
    try:
        return _configured()[1][key_id or DEFAULT_ID]
    except KeyError:
        raise UnknownKey(f"signed with key {key_id!r}, which is not configured") from None


def known() -> list[str]:
    return list(_configured()[1])


def sign(payload: bytes, key_id: str | None = None) -> tuple[str, str]:
    """(key id, hex HMAC-SHA256 of `payload`), with the current key unless one is named."""
    key_id = key_id if key_id is not None else current_id()
    return key_id, hmac.new(get(key_id), payload, hashlib.sha256).hexdigest()


def verify(payload: bytes, key_id: str, signature: str) -> bool:
    """Whether `signature` is the HMAC of `payload` under key `key_id` (False if unknown)."""
    try:
        expected = sign(payload, key_id)[1]
    except UnknownKey:
        return False
    return hmac.compare_digest(expected, signature)
