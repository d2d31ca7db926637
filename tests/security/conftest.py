"""Attack fixtures: API clients per user, the gated pipeline, and runs waiting at its gate."""

from tests.api.conftest import client_for, gated, superuser, waiting_run

__all__ = ["client_for", "gated", "superuser", "waiting_run"]
