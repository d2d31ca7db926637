"""Test settings for worker processes of crash tests: their own queue, so that no other
worker of the suite takes their tasks, and the crashing app (tests/crashing)."""

from firefly_site.test_settings import *  # noqa: F403
from firefly_site.test_settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.crashing"]
CELERY_TASK_DEFAULT_QUEUE = "firefly-tests-crash"
