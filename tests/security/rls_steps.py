"""A python step that reads the tenant tables with no filter, for tests/security/test_rls.py."""

from __future__ import annotations

from typing import Any

from pipelines.context import StepContext
from tests.security.urls import unscoped_rows


def forgetful(ctx: StepContext) -> dict[str, Any]:
    return {"seen": unscoped_rows()}
