"""The pages that decide, for bench/pages.py: the bulk decision of 50 tasks and email links.

A decided task cannot be decided again, so every timed request gets tasks of its own:
before timing, open tasks are seeded with COPY (waiting runs of `bench-decide`, a
noop then the `review` approval, as bench/pages.py seeds its tasks) in the measured
organization, and in the reviewer's small one for the small variant. Each bulk request
approves 50 of them; each email POST spends a fresh link on a fresh task.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace
from typing import Any

from bench.common import BenchError, time_ms

BULK = 50  # tasks per bulk request
BULK_PIPELINE = "bench-decide"


def bulk_spec() -> dict[str, Any]:
    return {
        "name": BULK_PIPELINE,
        "description": "bench/pages.py: fresh tasks for the bulk and email decisions",
        "steps": [
            {"name": "s00", "type": "noop"},
            {
                "name": "review",
                "type": "approval",
                "after": ["s00"],
                "config": {"assignee_role": "reviewers", "instructions": "Check the fields."},
            },
            {"name": "publish", "type": "noop", "after": ["review"]},
        ],
    }


def bulk_version(organization_id: int) -> SimpleNamespace:
    """The organization's `bench-decide` pipeline (visible to every member), made once."""
    from pipelines import services
    from pipelines.models import PipelineVersion

    version = (
        PipelineVersion.objects.filter(
            pipeline__organization_id=organization_id, pipeline__name=BULK_PIPELINE
        )
        .select_related("pipeline")
        .order_by("-number")
        .first()
    )
    if version is None:
        version = services.pipeline_create(
            spec=bulk_spec(), organization=organization_id, member_role="viewer"
        )
    return SimpleNamespace(
        pk=version.pk,
        number=version.number,
        pipeline_id=version.pipeline_id,
        organization_id=organization_id,
        name=BULK_PIPELINE,
        noops=["s00"],
    )


def seed_open(organization_id: int, count: int) -> list[int]:
    """`count` runs waiting at `review`, each with its open task; the tasks' ids."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection, transaction

    from approvals.models import HumanTask
    from bench import pages

    version = bulk_version(organization_id)
    role = Group.objects.get(name=pages.ROLE)
    starters = list(
        get_user_model()
        .objects.filter(username__startswith="bench-starter")
        .values_list("pk", "username")
    )
    if not starters:
        raise BenchError("no bench-starter users: bench/pages.py seeds them with its tasks")
    rng = random.Random(time.time_ns())
    now = datetime.now(UTC).replace(microsecond=0)
    tables = {
        "run": ("pipelines_run", pages.RUN_COLUMNS),
        "step": ("pipelines_steprun", pages.STEP_COLUMNS),
        "checkpoint": ("pipelines_checkpoint", pages.CHECKPOINT_COLUMNS),
        "audit": ("pipelines_auditentry", pages.audit_columns()),
        "task": ("approvals_humantask", pages.TASK_COLUMNS),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        run_ids = pages.reserve(cursor, "pipelines_run", count)
        step_ids = iter(pages.reserve(cursor, "pipelines_steprun", count * 3))
        rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in tables}
        for run_id in run_ids:
            pages.seed_run(rng, now, run_id, version, role, starters, step_ids, rows)
        for name, (table, columns) in tables.items():
            with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows[name]:
                    copy.write_row(row)
    ids = list(
        HumanTask.objects.filter(run_id__in=run_ids).order_by("pk").values_list("pk", flat=True)
    )
    if len(ids) != count:
        raise BenchError(f"seeded {len(ids)} open tasks, not {count}")
    return ids


def batches(ids: list[int], size: int) -> Iterator[list[int]]:
    return (ids[i : i + size] for i in range(0, len(ids), size))


def post_bulk(client: Any, api: str, tasks: list[int]) -> bytes:
    """Approve `tasks` through the inbox's form, or the API with the token `api`; all of
    them must be decided."""
    if api:
        response = client.post(
            "/api/v1/tasks/bulk/",
            {"action": "approve", "tasks": tasks, "comment": "bench"},
            content_type="application/json",
            headers={"Authorization": f"Token {api}"},
        )
        decided = response.json().get("decided") if response.status_code == 200 else None
    else:
        response = client.post(
            "/tasks/bulk/", {"action": "approve", "tasks": tasks, "comment": "bench"}
        )
        summary = f"{len(tasks)} decided, 0 refused".encode()
        decided = len(tasks) if summary in response.content else 0
    if response.status_code != 200 or decided != len(tasks):
        raise BenchError(
            f"bulk approval of {len(tasks)} tasks answered {response.status_code}:"
            f" {response.content[:300]!r}"
        )
    return bytes(response.content)


def email_token(task_id: int, user: Any) -> str:
    from approvals import email_links
    from approvals.models import HumanTask

    task = HumanTask.objects.get(pk=task_id)
    expires = datetime.now(UTC) + timedelta(hours=1)  # a seeded task may be overdue
    return email_links.token_for(task, user, email_links.APPROVE, expires_at=expires)


def email_page(client: Any, token: str, *, post: bool) -> bytes:
    url = f"/email/{token}/"
    response = client.post(url, {"comment": "bench"}) if post else client.get(url)
    want = b"Done: approve recorded" if post else b'<button type="submit" class="primary">'
    if response.status_code != 200 or want not in response.content:
        raise BenchError(f"{'POST' if post else 'GET'} {url} answered {response.status_code}")
    return bytes(response.content)


def measure(
    call: Callable[[Any], bytes],
    small_call: Callable[[Any], bytes],
    fresh: Iterator[Any],
    fresh_small: Iterator[Any],
    *,
    warmup: int,
    repeats: int,
    url: str,
) -> dict[str, Any]:
    """Like bench/pages.py's timing of a page, each request on fresh data."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(warmup):
        content = call(next(fresh))
    with CaptureQueriesContext(connection) as captured:
        call(next(fresh))
    queries = captured.captured_queries
    small_call(next(fresh_small))
    with CaptureQueriesContext(connection) as small:
        small_call(next(fresh_small))
    # Read now: the next request's request_started signal empties the query log.
    small_queries = len(small.captured_queries)
    return {
        "url": url,
        **time_ms(lambda: call(next(fresh)), repeats),
        "queries": len(queries),
        "queries_small": small_queries,
        "sql_ms": round(sum(float(q["time"]) for q in queries) * 1000, 1),
        "bytes": len(content),
        "sql": [q["sql"] for q in queries],
    }


def signed_in(user: Any, organization: str) -> Any:
    """A test client with the user's session, working in `organization`."""
    from django.test import Client

    from orgs.middleware import SESSION_KEY

    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_KEY] = organization
    session.save()
    return client


def time_decisions(
    wanted: Callable[[str], bool], *, warmup: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Time the bulk decisions (form and API) and the email link's page (GET, POST); the
    small variant decides as many tasks in the reviewer's small organization."""
    from django.test import Client

    from bench import pages
    from tokens.services import token_create

    reviewer = pages.reviewer()
    big, small = pages.organization_id(), pages.organization_id(pages.OTHER)
    per_page = warmup + 1 + repeats
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for name, api in (("bulk_form", False), ("bulk_api", True)):
        if not wanted(name):
            continue
        fresh = batches(seed_open(big, per_page * BULK), BULK)
        fresh_small = batches(seed_open(small, 2 * BULK), BULK)
        if api:  # a token names its organization; no session
            client, small_client = Client(), Client()
            key = token_create(user=reviewer, name="bench", organization=big)[1]
            small_key = token_create(user=reviewer, name="bench", organization=small)[1]
        else:
            client = signed_in(reviewer, pages.MEASURED)
            small_client = signed_in(reviewer, pages.OTHER)
            key = small_key = ""
        results[name] = measure(
            partial(post_bulk, client, key),
            partial(post_bulk, small_client, small_key),
            fresh,
            fresh_small,
            warmup=warmup,
            repeats=repeats,
            url=f"POST {'/api/v1/tasks/bulk/' if api else '/tasks/bulk/'} ({BULK} tasks)",
        )
    # An email link needs no session with FIREFLY_EMAIL_ACTIONS on: a reader's phone.
    anonymous = Client()
    for name, post in (("email_page", False), ("email_decide", True)):
        if not wanted(name):
            continue
        count = per_page if post else 1
        tokens = [email_token(t, reviewer) for t in seed_open(big, count)]
        small_tokens = [email_token(t, reviewer) for t in seed_open(small, 2 if post else 1)]
        links: Iterator[str] = iter(tokens) if post else _repeat(tokens[0])
        small_links: Iterator[str] = iter(small_tokens) if post else _repeat(small_tokens[0])
        results[name] = measure(
            partial(email_page, anonymous, post=post),
            partial(email_page, anonymous, post=post),
            links,
            small_links,
            warmup=warmup,
            repeats=repeats,
            url=f"{'POST' if post else 'GET'} /email/<token>/",
        )
    if results:
        print(f"decision pages seeded and timed in {time.perf_counter() - started:.1f} s")
    return results


def _repeat(value: Any) -> Iterator[Any]:
    while True:
        yield value
