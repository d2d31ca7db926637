from __future__ import annotations

import os
import signal
import threading

from django.apps import AppConfig
from django.db import transaction

CRASH_IN_TASK = "pipelines.tasks.execute_step"


class CrashingConfig(AppConfig):
    name = "tests.crashing"

    def ready(self) -> None:
        if not os.environ.get("FIREFLY_TEST_CRASH_AFTER_COMMIT"):
            return
        from celery.signals import task_prerun

        from pipelines import dispatch

        running = threading.local()

        @task_prerun.connect(weak=False)
        def note_task(sender: object = None, task: object = None, **kwargs: object) -> None:
            running.name = getattr(task, "name", "")

        send_relay = dispatch.relay_outbox

        def die_after_commit() -> None:
            if getattr(running, "name", "") != CRASH_IN_TASK:
                send_relay()
                return
            transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))

        dispatch.relay_outbox = die_after_commit
