"""`python tests/security/app_role_run.py PIPELINE STARTER REVIEWER`, with DATABASE_URL of the
least-privileged role: a run with a human gate started, executed, approved (in its
organization's scope, as a request is) and finished; verify_audit checks its chain."""

from __future__ import annotations

import json
import sys

import django


def main(pipeline: str, starter: str, reviewer: str) -> None:
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from approvals import services as approvals
    from approvals.models import HumanTask
    from firefly_site.celery import app
    from orgs import rls
    from pipelines import services
    from tests.approvals.conftest import drive
    from tests.conftest import UNCONSUMED_QUEUE

    def current_user() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            return str(cursor.fetchone()[0])

    # The steps run here, as this role: no worker of the suite may take them.
    app.conf.task_default_queue = UNCONSUMED_QUEUE
    users = get_user_model().objects
    login = current_user()
    run = services.run_start(pipeline=pipeline, inputs={"v": 1}, actor=users.get(username=starter))
    run = drive(run)
    task = HumanTask.objects.get(run=run, status=HumanTask.Status.OPEN)
    with rls.scoped(run.organization_id):
        scoped_as = current_user()
        approvals.task_approve(task_id=task.pk, user=users.get(username=reviewer), comment="ok")
    run = drive(run)
    call_command("verify_audit", "--run", str(run.pk))
    result = {"run": run.pk, "status": run.status, "login": login, "scoped_as": scoped_as}
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
