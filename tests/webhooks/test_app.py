"""The webhooks app keeps what an upgrade relies on, and the apps below it never import it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command

from firefly_site.celery import app
from pipelines import events
from pipelines.services import hooks
from webhooks import selectors, services, tasks
from webhooks.models import Webhook, WebhookDelivery

ROOT = Path(__file__).resolve().parents[2]


def test_the_tasks_keep_the_names_queued_messages_and_the_beat_schedule_use():
    for name, task in (
        ("approvals.tasks.deliver_webhook", tasks.deliver_webhook),
        ("approvals.tasks.sweep_webhooks", tasks.sweep_webhooks),
    ):
        assert task.name == name
        assert app.tasks[name].__module__ == "webhooks.tasks"
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "approvals.tasks.sweep_webhooks" in scheduled


def test_the_models_keep_their_tables():
    assert Webhook._meta.db_table == "approvals_webhook"
    assert WebhookDelivery._meta.db_table == "approvals_webhookdelivery"


@pytest.mark.django_db
def test_the_models_match_the_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_ready_subscribes_webhooks_once():
    apps.get_app_config("webhooks").ready()  # a second call changes nothing
    subscribed = [hook for hook in events.hooks if hook.listener is services.on_event]
    assert len(subscribed) == 1
    assert hooks.unsettled_sources["queued_webhook_deliveries"] is (
        selectors.run_pending_deliveries
    )


def imported_modules(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {(str(path), alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add((str(path), node.module))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("pipelines", ("approvals", "webhooks")), ("approvals", ("webhooks",))],
)
def test_the_apps_below_never_import_webhooks(package, forbidden):
    wrong = sorted(
        (path, module)
        for path, module in imported_modules(package)
        if module.split(".")[0] in forbidden
    )
    assert not wrong
