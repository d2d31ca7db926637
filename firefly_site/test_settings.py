"""Settings for the test suite: real PostgreSQL and Redis, fast password hashing."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/firefly")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
# Tests run as production does (DEBUG off), with keys of their own: the settings refuse
# the development keys outside debug.
os.environ.setdefault("SECRET_KEY", "firefly-test-secret-key-used-by-the-test-suite-only")
os.environ.setdefault("FIREFLY_AUDIT_KEY", "firefly-test-audit-key-used-by-the-test-suite-only")
os.environ.setdefault("FIREFLY_SECRETS_KEY", "firefly-test-secrets-key-used-by-the-test-suite-only")

from firefly_site.settings import *  # noqa: F403

DEBUG = False
# The test client and the live server for browser tests speak plain HTTP.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0
# Pages render without a collectstatic run first; tests/e2e/test_serve.py runs the
# production storage under gunicorn.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
FIREFLY_CALLABLE_MODULES = ["pipelines.demo", "tests"]
# The suite's worker processes consume this queue; tests without a worker send theirs
# elsewhere (tests/conftest.py), so they never race a worker for their own steps.
CELERY_TASK_DEFAULT_QUEUE = "firefly-tests"
