"""Encryption at rest of webhook secrets, with keys from the environment (never the database)."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class Undecryptable(Exception):
    """A stored secret that none of the configured keys opens."""


def _fernet_key(key: str) -> bytes:
    # The settings keys are at least 32 bytes of randomness (or the public development
    # key); one SHA-256 turns any of them into the 32 bytes Fernet wants.
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())


@lru_cache(maxsize=4)
def _box(key: str, old_keys: tuple[str, ...]) -> MultiFernet:
    # The first key encrypts; every key, old ones included, may decrypt.
    return MultiFernet([Fernet(_fernet_key(k)) for k in (key, *old_keys)])


def _current() -> MultiFernet:
    # Read at each call, not at import: a changed setting takes effect (and tests set it).
    return _box(settings.FIREFLY_SECRETS_KEY, tuple(settings.FIREFLY_SECRETS_OLD_KEYS))


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise Undecryptable(
            "the webhook secret cannot be decrypted: FIREFLY_SECRETS_KEY (or one of "
            "FIREFLY_SECRETS_OLD_KEYS) is not the key it was encrypted with"
        ) from exc
