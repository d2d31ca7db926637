"""Test settings for a real `celery beat` that sends only the schedules' task, often."""

from firefly_site.test_settings import *  # noqa: F403

FIREFLY_SCHEDULE_INTERVAL_S = 0.5
CELERY_BEAT_SCHEDULE = {
    "firefly-schedules": {
        "task": "schedules.tasks.fire_schedules",
        "schedule": FIREFLY_SCHEDULE_INTERVAL_S,
    },
}
