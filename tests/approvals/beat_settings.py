"""Test settings for a real `celery beat` that sends only the notifications' task, often."""

from firefly_site.test_settings import *  # noqa: F403

FIREFLY_NOTIFY_INTERVAL_S = 0.5
CELERY_BEAT_SCHEDULE = {
    "firefly-notifications": {
        "task": "approvals.tasks.send_notifications",
        "schedule": FIREFLY_NOTIFY_INTERVAL_S,
    },
}
