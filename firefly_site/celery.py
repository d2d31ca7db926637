"""The Celery app: `celery -A firefly_site worker` and `celery -A firefly_site beat`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "firefly_site.settings")

app = Celery("firefly")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
