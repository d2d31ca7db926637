"""Slack request signing: `v0=` HMAC-SHA256 of `v0:{timestamp}:{body}`, constant-time checked."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE = "X-Slack-Signature"
TIMESTAMP = "X-Slack-Request-Timestamp"
VERSION = "v0"
# Slack's own advice: a request signed longer ago than this is refused (a replay of an
# old one would otherwise be as good as new).
MAX_AGE_S = 5 * 60


class BadRequestSignature(Exception):
    """Not signed with the app's secret, or signed too long ago; the message says which."""


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-Slack-Signature` Slack sends for `body` at `timestamp`."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    return f"{VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(
    secret: str, body: bytes, signature: str | None, timestamp: str | None, *, now: float
) -> int:
    """Check a request's signature and age; returns its timestamp."""
    if not signature:
        raise BadRequestSignature(f"no {SIGNATURE} header")
    stamp = (timestamp or "").strip()
    if not stamp.isdigit() or len(stamp) > 12:
        raise BadRequestSignature(f"{TIMESTAMP} is missing or not a Unix time in seconds")
    # The signature first: an unsigned request learns nothing, not even about the clock.
    if not hmac.compare_digest(signature.strip().encode(), sign(secret, stamp, body).encode()):
        raise BadRequestSignature(f"{SIGNATURE} does not match the timestamp and body")
    if abs(now - int(stamp)) > MAX_AGE_S:
        raise BadRequestSignature(
            f"{TIMESTAMP} is {int(now - int(stamp))} s from now; more than {MAX_AGE_S} s is refused"
        )
    return int(stamp)
