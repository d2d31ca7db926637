"""The client's address: behind Firefly's own proxy, the one the proxy saw."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings


def client_address(request: Any) -> str | None:
    """REMOTE_ADDR; with FIREFLY_TLS_PROXY, the right-most X-Forwarded-For address.

    Behind the proxy every request comes from the proxy's address, so login lockouts per
    address (django-axes) would lock every user out after a few failures by anyone. The
    right-most entry is the one the proxy wrote (nginx's `$remote_addr`, or appended by
    `$proxy_add_x_forwarded_for`); whatever a client sent stands to its left.
    """
    remote = request.META.get("REMOTE_ADDR")
    if not settings.FIREFLY_TLS_PROXY:
        return remote
    last = request.META.get("HTTP_X_FORWARDED_FOR", "").rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return remote
