"""Settings for the test suite: real PostgreSQL and Redis, fast password hashing."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/firefly")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")

from firefly_site.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
FIREFLY_CALLABLE_MODULES = ["pipelines.demo", "tests"]
# The suite's worker processes consume this queue; tests without a worker send theirs
# elsewhere (tests/conftest.py), so they never race a worker for their own steps.
CELERY_TASK_DEFAULT_QUEUE = "firefly-tests"
