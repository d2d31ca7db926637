"""Rate limits on the API calls that start work or decide it, with refusals recorded."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from pipelines.security import refusal_record


class AuditedScopedThrottle(ScopedRateThrottle):
    """DRF's per-user (or per-address) scoped rate limit; a refusal answers 429 with
    Retry-After, and the first refusal of each window is recorded as a SecurityEvent.

    One record per window, not per refused request: a client hammering the API must not
    turn the evidence table into the next thing to flood.
    """

    def allow_request(self, request: Request, view: Any) -> bool:
        if super().allow_request(request, view):
            return True
        if self.key is not None and cache.add(f"{self.key}:recorded", 1, self.duration):
            user = getattr(request, "user", None)
            refusal_record(
                event="api.throttled",
                reason=f"more than {self.rate} {self.scope} requests",
                actor=user,
                address=self.get_ident(request),
                scope=self.scope,
                path=request.path,
            )
        return False
