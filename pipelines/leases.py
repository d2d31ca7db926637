"""Keeps the leases of the steps running in this worker process alive."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews running steps' leases from a background thread.

    A worker that dies stops renewing, and the reaper retries its steps once their
    leases run out. A step found no longer running (cancelled, rolled back) has its
    `cancelled` event set, so a handler that polls it can stop early.
    """

    def __init__(self) -> None:
        self._held: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, step_run_id: int, cancelled: threading.Event) -> None:
        with self._lock:
            self._held[step_run_id] = cancelled
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="firefly-leases", daemon=True
                )
                self._thread.start()

    def release(self, step_run_id: int) -> None:
        with self._lock:
            self._held.pop(step_run_id, None)

    def _loop(self) -> None:
        while True:
            time.sleep(settings.FIREFLY_STEP_LEASE_S / 3)
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                self.renew(held)
            except Exception:
                log.exception("could not renew the leases of steps %s", sorted(held))
            finally:
                close_old_connections()

    def renew(self, held: dict[int, threading.Event]) -> None:
        from pipelines.models import StepRun

        running = StepRun.objects.filter(pk__in=held, status=StepRun.Status.RUNNING)
        until = timezone.now() + timedelta(seconds=settings.FIREFLY_STEP_LEASE_S)
        renewed = set(running.values_list("pk", flat=True))
        StepRun.objects.filter(pk__in=renewed, status=StepRun.Status.RUNNING).update(
            lease_until=until
        )
        for step_run_id, cancelled in held.items():
            if step_run_id not in renewed:
                cancelled.set()


leases = LeaseKeeper()
