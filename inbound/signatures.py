"""Checking a delivery's signature in the formats a hook accepts; constant-time compares."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

# Firefly's own format is the one its outbound webhooks sign with (webhooks.services.sign):
# `Firefly-Signature: sha256=<hex>` over `<Firefly-Timestamp>.<body>`, several comma
# separated while a rotated-out secret is still in its grace period.
FIREFLY_SIGNATURE = "Firefly-Signature"
FIREFLY_TIMESTAMP = "Firefly-Timestamp"
FIREFLY_DELIVERY = "Firefly-Delivery"


class BadSignature(Exception):
    """The delivery is not signed with the hook's secret; the message says how."""


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _offered(header: str) -> list[str]:
    """The hex digests a header offers: `sha256=<hex>`, possibly several, comma separated."""
    found = []
    for part in header.split(","):
        scheme, _, digest = part.strip().partition("=")
        if scheme.strip().lower() == "sha256" and digest:
            found.append(digest.strip().lower())
    return found


def _matches(offered: list[str], expected: Iterable[str]) -> bool:
    # Every pair compared, in constant time each: no early exit tells which part matched.
    result = False
    for want in expected:
        for got in offered:
            result |= hmac.compare_digest(got.encode(), want.encode())
    return result


def verify_hmac(secrets: list[str], body: bytes, header: str | None, name: str) -> None:
    """`<name>: sha256=<hex of HMAC-SHA256(secret, raw body)>`."""
    if not header:
        raise BadSignature(f"no {name} header")
    offered = _offered(header)
    if not offered:
        raise BadSignature(f"{name} is not of the form sha256=<hex>")
    if not _matches(offered, (_mac(s, body) for s in secrets)):
        raise BadSignature(f"{name} does not match the body")


def verify_firefly(
    secrets: list[str], body: bytes, header: str | None, timestamp: str | None
) -> int:
    """Firefly's format; returns the timestamp it covers (the caller checks its age)."""
    if not header:
        raise BadSignature(f"no {FIREFLY_SIGNATURE} header")
    if not timestamp or not timestamp.strip().isdigit() or len(timestamp.strip()) > 12:
        raise BadSignature(f"{FIREFLY_TIMESTAMP} is missing or not a Unix time in seconds")
    offered = _offered(header)
    if not offered:
        raise BadSignature(f"{FIREFLY_SIGNATURE} is not of the form sha256=<hex>")
    signed = timestamp.strip().encode() + b"." + body
    if not _matches(offered, (_mac(s, signed) for s in secrets)):
        raise BadSignature(f"{FIREFLY_SIGNATURE} does not match the timestamp and body")
    return int(timestamp)


def sign_hmac(secret: str, body: bytes) -> str:
    """What a sender puts in an hmac-sha256 hook's header (for tests, docs and benches)."""
    return f"sha256={_mac(secret, body)}"


def sign_firefly(secret: str, timestamp: int, body: bytes) -> str:
    return f"sha256={_mac(secret, str(timestamp).encode() + b'.' + body)}"
