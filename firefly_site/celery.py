"""The Celery app: `celery -A firefly_site worker` and `celery -A firefly_site beat`."""

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "firefly_site.settings")

app = Celery("firefly")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Tasks about one run (or one delivery) act in its organization under row-level security
# (orgs/rls.py): {task name: (app label, model, argument) of the row the argument names}. The
# sweeps (reap, expire_overdue, send_notifications, sweep_webhooks, anchor_audit,
# apply_retention) work across organizations, as Firefly.
TENANT_TASKS = {
    "pipelines.tasks.advance_run": ("pipelines", "Run", "run_id"),
    "pipelines.tasks.finish_run": ("pipelines", "Run", "run_id"),
    "pipelines.tasks.settle_handoff": ("pipelines", "Run", "child_run_id"),
    "pipelines.tasks.execute_step": ("pipelines", "StepRun", "step_run_id"),
    "approvals.tasks.deliver_webhook": ("webhooks", "WebhookDelivery", "delivery_id"),
}


@task_prerun.connect
def before_task(task: Any = None, args: Any = (), kwargs: Any = None, **_: Any) -> None:
    """As before a request: drop broken or expired connections, then choose the tenant.

    Not for a task applied eagerly: it runs inside its caller's transaction and scope.
    """
    from django.apps import apps
    from django.db import close_old_connections

    from orgs import rls

    if getattr(task.request, "is_eager", False):
        return
    close_old_connections()
    row = TENANT_TASKS.get(task.name)
    if row is None:
        rls.leave()  # a sweep: Firefly itself (nothing to do if the last task was one too)
        return
    app_label, model, argument = row
    pk = args[0] if args else (kwargs or {}).get(argument)
    # One statement sets the organization and the role, whatever the last task left.
    rls.enter_row(apps.get_model(app_label, model)._meta.db_table, pk)


@task_postrun.connect
def after_task(task: Any = None, **_: Any) -> None:
    """Drop broken or expired connections. The organization stays set: only tasks use a
    worker's connection, and the next one sets its own (or leaves it, for a sweep), which
    spares a round trip on every step."""
    from django.db import close_old_connections

    if getattr(task.request, "is_eager", False):
        return
    close_old_connections()


@worker_ready.connect
def serve_metrics(**_: Any) -> None:
    """With FIREFLY_METRICS_PORT set, the worker serves its own counters on that port."""
    from firefly_site.metrics import serve_worker_metrics

    serve_worker_metrics()
