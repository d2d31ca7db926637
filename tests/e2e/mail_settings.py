"""Test settings for a worker that mails through the tests' own SMTP server (its port in
FIREFLY_TEST_SMTP_PORT) and sends the notifications' beat often."""

import os

from tests.approvals.beat_settings import *  # noqa: F403

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ["FIREFLY_TEST_SMTP_PORT"])
