"""The Celery app: `celery -A firefly_site worker` and `celery -A firefly_site beat`."""

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "firefly_site.settings")

app = Celery("firefly")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def drop_stale_connections(task: Any = None, **kwargs: Any) -> None:
    """Around each task, as around a request: drop broken or expired connections.

    Not around a task applied eagerly: it runs inside its caller's transaction.
    """
    from django.db import close_old_connections

    if not getattr(task.request, "is_eager", False):
        close_old_connections()
