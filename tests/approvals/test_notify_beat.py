"""A real `celery beat` and worker send a deadline reminder once and a digest when due."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from approvals import preferences
from approvals.models import HumanTask, QueuedNotification, TaskReminder
from pipelines import services
from tests.conftest import wait_for
from tests.workers import beat_process

pytestmark = pytest.mark.worker


@pytest.fixture
def beat(worker: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A firefly_site beat`, sending the notifications' task every half second."""
    with beat_process(
        "tests.approvals.beat_settings", tmp_path / "beat-schedule", "test-notify-beat.log"
    ) as process:
        yield process


def test_the_beat_reminds_once_and_sends_a_digest(worker, users, beat):
    services.pipeline_create(
        member_role="starter",
        spec={
            "name": "timed",
            "steps": [
                {
                    "name": "review",
                    "type": "approval",
                    "config": {
                        "assignee_role": "reviewers",
                        "timeout_hours": 10,
                        "remind_before_hours": 2,
                    },
                }
            ],
        },
    )
    run = services.run_start(pipeline="timed", inputs={}, actor=users["starter"])
    wait_for(lambda: HumanTask.objects.filter(run=run).exists(), timeout=20, message="the task")
    task = HumanTask.objects.get(run=run)
    # After the task opened (and its first mail went out): r2 takes an hourly digest.
    preferences.preferences_set(
        user=users["r2"],
        frequency="hourly",
        email=True,
        new_task=True,
        due_soon=True,
        task_decided=True,
        run_finished=True,
    )
    # Setup only: as if eight hours had passed, the reminder is due now.
    HumanTask.objects.filter(pk=task.pk).update(remind_at=timezone.now() - timedelta(minutes=1))
    wait_for(
        lambda: TaskReminder.objects.filter(task=task).exists(), timeout=20, message="a reminder"
    )
    # r2 chose an hourly digest: the reminder went to their queue, and the beat sent it.
    wait_for(
        lambda: QueuedNotification.objects.filter(
            user=users["r2"], event="task.due_soon", sent_at__isnull=False
        ).exists(),
        timeout=20,
        message="r2's digest",
    )
    time.sleep(1.5)  # more beats: still one reminder, and nothing more queued for r2
    assert TaskReminder.objects.filter(task=task).count() == 1
    assert not QueuedNotification.objects.filter(user=users["r2"], sent_at__isnull=True).exists()
