"""Benchmark of the reviewer and operator pages on a database of realistic size.

    python bench/pages.py

Reads DATABASE_URL like the app; when unset it uses the local PostgreSQL database
`firefly_bench_orgs` of bench/audit_admin.py (never the SQLite file), so its 1,000,000
audit entries in 100 organizations are reused, and seeded with its function when
missing. On top of them it seeds, once, 10,000 open approval tasks spread over the same
organizations (9% in each of the ten big ones, the rest over the 90 small ones):
pipelines `bench-pages-NN` (10 in a big organization, 2 in a small one) whose approval
step `review` (assignee_role `reviewers`) comes after 1 to 46 `noop` steps; each task
has its waiting run, its step rows, checkpoints and an HMAC-chained audit trail (a run
of the longest pipeline has 50 entries); a third of the tasks are overdue, a third due
later, a third have no deadline. All with COPY, in one transaction. Pipelines 00 to 04
are visible to every member (viewer); 05 to 09 are private, with a viewer grant to the
group `reviewers`.

For the insights page and "Decided by me" it also seeds, once, 100,000 decided tasks in
`bench-org-00` over the last 60 days (a finished run, its review step, the task and one
decision each: approve 80%, reject 12%, roll back 8%; a tenth by the reviewer), and an
operator `bench-operator` (a member with an operator grant on each of that
organization's bench pipelines, no admin) who reads the insights.

Then a reviewer (a member of `reviewers` and of the big organization `bench-org-00`,
where they work, and of the small `bench-org-10`; neither staff nor superuser) is
logged in with Django's test client (DEBUG off) and every page and htmx partial is
requested 3 times to warm up, once inside CaptureQueriesContext to count queries, then
30 times timed. A small variant of each page (a 1-step run, a 5-task pipeline) is
counted as well: the same number of queries on both shows the count does not grow with
the data.

The pages that decide come last (bench/pages_decide.py): the bulk approval of 50 tasks
through the inbox's form (`bulk_form`) and `POST /api/v1/tasks/bulk/` (`bulk_api`, with
an API token), and an email action link's page, `GET /email/<token>/` (`email_page`)
and the POST of its button (`email_decide`), with FIREFLY_EMAIL_ACTIONS on and no
session. A decided task cannot be decided again, so open tasks are seeded for every
request (1,700 per bulk page); their small variant decides as many in the reviewer's
small organization. FIREFLY_THROTTLE_DECIDE is lifted for the run. Those tasks stay
decided (about 3,450 per run in the measured organization, by the reviewer): they add
to its insights and to the reviewer's archive in later runs.

Prints a table, then as its last line one JSON object with the figures. Exits 1 when
the bench cannot run, 3 when a page misses the target (p95 <= 200 ms, queries
independent of the data size).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import pages_decide  # noqa: E402
from bench.audit_admin import (  # noqa: E402
    BIG_ORGANIZATIONS,
    ORGANIZATIONS,
    RUN_COLUMNS,
    audit_columns,
    configure_admin_env,
    join,
    organization_index,
    organization_slug,
    organizations,
    prepare,
)
from bench.common import (  # noqa: E402
    BenchError,
    database_errors,
    main,
    print_columns,
    setup,
    time_ms,
)

TASKS = 10_000
PIPELINES = 10  # in a big organization; a small one has SMALL_PIPELINES
SMALL_PIPELINES = 2
PUBLIC_PIPELINES = 5  # 00 to 04 visible to every member; the others by a grant
MEASURED = organization_slug(0)  # where the reviewer works: a big organization
OTHER = organization_slug(BIG_ORGANIZATIONS)  # a small one the reviewer also belongs to
PREFIX = "bench-pages"
SMALL_PIPELINE_TASKS = 5  # pipeline 00 (1 step before the gate) of each organization
MAX_STEPS = 46  # noop steps before the gate in the longest pipeline: 50 audit entries
ROLE = "reviewers"
REVIEWER = "bench-reviewer"
STARTERS = 6
DAYS = 14
SEED = 20240611
CHUNK = 1000  # runs per COPY batch

# The insights page and "Decided by me": decided tasks (one decision each) in the
# measured organization over DECIDED_DAYS, a tenth of them by the reviewer; an operator
# (a member with an operator grant on each of its pipelines, no admin) reads the page.
DECIDED = 100_000
DECIDED_DAYS = 60
SMALL_DECIDED = 50  # of pipeline 00: the small variant
OPERATOR = "bench-operator"

REPEATS = 30
WARMUP = 3
TARGET_P95_MS = 200.0

STEP_COLUMNS = (
    "id",
    "organization_id",
    "run_id",
    "step_name",
    "generation",
    "attempt",
    "status",
    "inputs",
    "outputs",
    "error",
    "queued_at",
    "started_at",
    "finished_at",
)
CHECKPOINT_COLUMNS = (
    "organization_id",
    "run_id",
    "seq",
    "kind",
    "step_name",
    "generation",
    "step_run_id",
    "status",
    "paused",
    "pause_reason",
    "data",
    "created_at",
)
TASK_COLUMNS = (
    "organization_id",
    "run_id",
    "step_run_id",
    "step_name",
    "generation",
    "kind",
    "status",
    "assignee_role_id",
    "instructions",
    "context",
    "quorum",
    "allow_self_approval",
    "due_at",
    "on_timeout",
    "created_at",
    "pipeline_id",
)


# --- seed -----------------------------------------------------------------------------


def steps_before_gate(index: int) -> int:
    """1, 6, 11, ... 46 noop steps before the gate of pipeline `index`."""
    return 1 + round((MAX_STEPS - 1) * index / (PIPELINES - 1))


def pipeline_spec(index: int) -> dict[str, Any]:
    names = [f"s{i:02d}" for i in range(steps_before_gate(index))]
    steps: list[dict[str, Any]] = [
        {"name": name, "type": "noop", **({"after": [names[i - 1]]} if i else {})}
        for i, name in enumerate(names)
    ]
    steps.append(
        {
            "name": "review",
            "type": "approval",
            "after": [names[-1]],
            "config": {"assignee_role": ROLE, "instructions": "Check the extracted fields."},
        }
    )
    steps.append({"name": "publish", "type": "noop", "after": ["review"]})
    return {
        "name": f"{PREFIX}-{index:02d}",
        "description": f"bench/pages.py: {len(names)} noop steps, an approval, a noop",
        "steps": steps,
    }


def reviewer() -> Any:
    """The bench's reviewer: a member of the role and of the measured organization (and
    of a small one), neither staff nor superuser."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from orgs.models import Organization

    group, _ = Group.objects.get_or_create(name=ROLE)
    user, _ = get_user_model().objects.get_or_create(username=REVIEWER)
    if user.is_staff or user.is_superuser:
        raise BenchError(f"user {REVIEWER!r} must be neither staff nor superuser")
    user.groups.add(group)
    join(
        [user],
        list(Organization.objects.filter(slug__in=[MEASURED, OTHER]).values_list("pk", flat=True)),
    )
    return user


def organization_id(slug: str = MEASURED) -> int:
    from orgs.models import Organization

    return Organization.objects.values_list("pk", flat=True).get(slug=slug)


def open_tasks() -> int:
    from approvals.models import HumanTask

    return HumanTask.objects.filter(
        status=HumanTask.Status.OPEN,
        assignee_role__name=ROLE,
        run__pipeline_version__pipeline__name__startswith=f"{PREFIX}-",
    ).count()


def reserve(cursor: Any, table: str, count: int) -> list[int]:
    cursor.execute(
        f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %s)",
        [count],
    )
    return [row[0] for row in cursor.fetchall()]


def seed_tasks() -> float:
    """Pipelines in each organization, 10,000 waiting runs with their steps, checkpoints,
    audit trails and open tasks, in one transaction (COPY; triggers off as in
    bench/audit_admin.py)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection, transaction

    from pipelines import services
    from pipelines.models import PipelineGrant

    started = time.perf_counter()
    rng = random.Random(SEED)
    now = datetime.now(UTC).replace(microsecond=0)
    role = Group.objects.get(name=ROLE)
    User = get_user_model()
    with transaction.atomic(), connection.cursor() as cursor:
        org_ids = organizations()
        versions: list[list[Any]] = []  # per organization
        for index, org_id in enumerate(org_ids):
            versions.append([])
            count = PIPELINES if index < BIG_ORGANIZATIONS else SMALL_PIPELINES
            for i in range(count):
                public = i < PUBLIC_PIPELINES
                version = services.pipeline_create(
                    spec=pipeline_spec(i),
                    organization=org_id,
                    member_role="viewer" if public else "",
                )
                if not public:
                    PipelineGrant.objects.create(
                        pipeline_id=version.pipeline_id, group=role, role="viewer"
                    )
                noops = [s["name"] for s in version.spec["steps"] if s["type"] == "noop"][:-1]
                versions[index].append(
                    SimpleNamespace(
                        pk=version.pk,
                        number=version.number,
                        pipeline_id=version.pipeline_id,
                        organization_id=org_id,
                        name=version.pipeline.name,
                        noops=noops,
                    )
                )
        starter_users = [
            User.objects.get_or_create(username=f"bench-starter{i}")[0] for i in range(STARTERS)
        ]
        join(starter_users, org_ids)
        starters = [(u.pk, u.get_username()) for u in starter_users]
        cursor.execute("SET LOCAL session_replication_role = replica")
        # Each organization's first tasks go to its pipeline 00 (the small variants); the
        # rest share its other pipelines.
        plan = []
        tasks_in = [0] * ORGANIZATIONS
        for n in range(TASKS):
            org_index = organization_index(n)
            j = tasks_in[org_index]
            tasks_in[org_index] += 1
            own = versions[org_index]
            i = 0 if j < SMALL_PIPELINE_TASKS else 1 + (j - SMALL_PIPELINE_TASKS) % (len(own) - 1)
            plan.append(own[i])
        run_ids = reserve(cursor, "pipelines_run", TASKS)
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        copies = {
            "run": f"COPY pipelines_run ({', '.join(RUN_COLUMNS)}) FROM STDIN",
            "step": f"COPY pipelines_steprun ({', '.join(STEP_COLUMNS)}) FROM STDIN",
            "checkpoint": f"COPY pipelines_checkpoint ({', '.join(CHECKPOINT_COLUMNS)}) FROM STDIN",
            "audit": f"COPY pipelines_auditentry ({', '.join(audit_columns())}) FROM STDIN",
            "task": f"COPY approvals_humantask ({', '.join(TASK_COLUMNS)}) FROM STDIN",
        }
        for chunk in range(0, TASKS, CHUNK):
            indexes = range(chunk, min(chunk + CHUNK, TASKS))
            step_count = sum(len(plan[n].noops) + 2 for n in indexes)
            step_ids = iter(reserve(cursor, "pipelines_steprun", step_count))
            rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in copies}
            for n in indexes:
                seed_run(rng, now, run_ids[n], plan[n], role, starters, step_ids, rows)
            for name in ("run", "step", "checkpoint", "audit", "task"):
                with raw.copy(copies[name]) as copy:
                    for row in rows[name]:
                        copy.write_row(row)
            print(f"  seeded {indexes.stop:,} tasks ({time.perf_counter() - started:.0f} s)")
    return time.perf_counter() - started


def seed_run(
    rng: random.Random,
    now: datetime,
    run_id: int,
    version: Any,
    role: Any,
    starters: list[tuple[int, str]],
    step_ids: Any,
    rows: dict[str, list[tuple[Any, ...]]],
) -> None:
    """The rows of one run waiting at `review`: as the engine would have left them."""
    from pipelines import keys
    from pipelines.audit import entry_hash
    from pipelines.canonical import CURRENT_SCHEME, content_digest

    pipeline_id, pipeline_name, noops = version.pipeline_id, version.name, version.noops
    org_id = version.organization_id
    columns = audit_columns()
    starter = rng.choice(starters) if rng.random() < 0.7 else None
    inputs = {"document": f"doc-{run_id}.pdf", "priority": rng.randint(1, 5)}
    created = now - timedelta(seconds=rng.uniform(600, DAYS * 86400))
    clock = created
    seq, head = 0, ""

    def audit(event: str, **values: Any) -> None:
        nonlocal seq, head
        seq += 1
        actor = values.pop("actor", None)
        entry: dict[str, Any] = {
            "run_id": run_id,
            "pipeline_id": pipeline_id,
            "organization_id": org_id,
            "seq": seq,
            "step_name": "",
            "actor_id": actor[0] if actor else None,
            "actor_name": actor[1] if actor else "system",
            "status": "",
            "inputs": None,
            "outputs": None,
            "latency_ms": None,
            "started_at": None,
            "completed_at": None,
            "error_message": "",
            "pause_reason": "",
            "data": None,
            **values,
            "event": event,
            "created_at": clock,
            "prev_hash": head,
            "hash_scheme": CURRENT_SCHEME,
            "key_id": keys.current_id(),
        }
        entry["content_hash"] = content_digest(SimpleNamespace(**entry))  # type: ignore[arg-type]
        head = entry["hash"] = entry_hash(SimpleNamespace(**entry))  # type: ignore[arg-type]
        for column in ("inputs", "outputs", "data"):
            if entry[column] is not None:
                entry[column] = json.dumps(entry[column])
        rows["audit"].append(tuple(entry[c] for c in columns))

    checkpoints: list[tuple[str, int, str, bool]] = []
    audit(
        "run.created",
        status="pending",
        actor=starter,
        inputs=inputs,
        data={"pipeline": pipeline_name, "version": version.number},
    )
    clock += timedelta(milliseconds=rng.randint(5, 50))
    audit("run.started", status="running", actor=starter)
    outputs: dict[str, Any] = {}
    for index, name in enumerate(noops):
        step_id = next(step_ids)
        queued = clock
        begun = clock + timedelta(milliseconds=rng.randint(1, 20))
        clock = begun + timedelta(milliseconds=rng.randint(1, 300))
        outputs = {"index": index, "ok": True}
        rows["step"].append(
            (
                step_id,
                org_id,
                run_id,
                name,
                1,
                1,
                "succeeded",
                None,
                json.dumps(outputs),
                "",
                queued,
                begun,
                clock,
            )
        )
        audit(
            "step.succeeded",
            step_name=name,
            status="succeeded",
            outputs=outputs,
            latency_ms=int((clock - begun).total_seconds() * 1000),
            started_at=begun,
            completed_at=clock,
        )
        checkpoints.append((name, step_id, "succeeded", False))
    gate_id = next(step_ids)
    clock += timedelta(milliseconds=rng.randint(1, 20))
    rows["step"].append(
        (gate_id, org_id, run_id, "review", 1, 1, "waiting", None, None, "", clock, clock, None)
    )
    rows["step"].append(
        (
            next(step_ids),
            org_id,
            run_id,
            "publish",
            1,
            1,
            "pending",
            None,
            None,
            "",
            None,
            None,
            None,
        )
    )
    audit("step.waiting", step_name="review", status="waiting", started_at=clock)
    checkpoints.append(("review", gate_id, "waiting", True))
    audit(
        "task.opened",
        step_name="review",
        status="open",
        data={"kind": "approval", "assignee": None, "role": ROLE},
    )
    for cp_seq, (name, step_id, status, paused) in enumerate(checkpoints, 1):
        rows["checkpoint"].append(
            (org_id, run_id, cp_seq, "step", name, 1, step_id, status, paused, "", None, clock)
        )
    rows["run"].append(
        (
            run_id,
            org_id,
            version.pk,
            "waiting",
            json.dumps(inputs),
            "",
            1,
            created,
            created,
            None,
            seq,
            head,
            len(checkpoints),
            len(checkpoints) + 1,
            starter[0] if starter else None,
            "",
            0,
            "",
            "",
        )
    )
    due = rng.random()
    due_at = (
        None
        if due < 1 / 3
        else clock + timedelta(hours=rng.uniform(-72, -1) if due < 2 / 3 else rng.uniform(1, 72))
    )
    context = {"inputs": inputs, "upstream": {noops[-1]: outputs}}
    rows["task"].append(
        (
            org_id,
            run_id,
            gate_id,
            "review",
            1,
            "approval",
            "open",
            role.pk,
            "Check the extracted fields.",
            json.dumps(context),
            1,
            False,
            due_at,
            "reject" if due_at else "",
            clock,
            pipeline_id,
        )
    )


DECIDED_TASK_COLUMNS = (*TASK_COLUMNS, "decided_at", "decided_by_id")
DECISION_COLUMNS = (
    "organization_id",
    "task_id",
    "user_id",
    "action",
    "comment",
    "rollback_to",
    "channel",
    "created_at",
)


def operator() -> Any:
    """The insights page's reader: a member of the measured organization who operates its
    bench pipelines by a grant (the slower path: an admin's figures skip the filter)."""
    from django.contrib.auth import get_user_model

    from pipelines.models import Pipeline, PipelineGrant

    user, _ = get_user_model().objects.get_or_create(username=OPERATOR)
    join([user], [organization_id()])
    for pipeline in Pipeline.objects.filter(
        organization_id=organization_id(), name__startswith=f"{PREFIX}-"
    ):
        PipelineGrant.objects.get_or_create(pipeline=pipeline, user=user, role="operator")
    return user


def decided_tasks() -> int:
    from approvals.models import HumanTask

    return HumanTask.objects.filter(
        organization_id=organization_id(),
        decided_at__isnull=False,
        run__pipeline_version__pipeline__name__startswith=f"{PREFIX}-",
    ).count()


def seed_decided() -> float:
    """DECIDED finished runs of the measured organization's pipelines, each with its
    decided review step, task and decision (approve 80%, reject 12%, roll back 8%), over
    the last DECIDED_DAYS; waits spread from seconds to days; half had a 4 h deadline.
    Only the rows the insights and the archive read: no audit trail of their own."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection, transaction

    from pipelines.models import PipelineVersion

    started = time.perf_counter()
    rng = random.Random(SEED + 1)
    now = datetime.now(UTC).replace(microsecond=0)
    org_id = organization_id()
    role = Group.objects.get(name=ROLE)
    versions = list(
        PipelineVersion.objects.filter(
            organization_id=org_id, pipeline__name__startswith=f"{PREFIX}-"
        )
        .order_by("pipeline__name")
        .values_list("pk", "pipeline_id")
    )
    starters = get_user_model().objects.filter(username__startswith="bench-starter")
    deciders = [reviewer().pk, *starters.values_list("pk", flat=True)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        raw = cursor.cursor
        for chunk in range(0, DECIDED, CHUNK * 10):
            count = min(CHUNK * 10, DECIDED - chunk)
            run_ids = reserve(cursor, "pipelines_run", count)
            step_ids = reserve(cursor, "pipelines_steprun", count)
            task_ids = reserve(cursor, "approvals_humantask", count)
            rows: dict[str, list[tuple[Any, ...]]] = {"run": [], "step": [], "task": [], "dec": []}
            for k in range(count):
                n = chunk + k
                version, pipeline_id = (
                    versions[0] if n < SMALL_DECIDED else versions[1 + n % (len(versions) - 1)]
                )
                opened = now - timedelta(seconds=rng.uniform(3600, DECIDED_DAYS * 86400))
                waited = timedelta(seconds=min(rng.lognormvariate(7.5, 1.8), 6 * 86400))
                decided = opened + waited
                draw = rng.random()
                action, status, run_status = (
                    ("approve", "completed", "succeeded")
                    if draw < 0.8
                    else ("reject", "rejected", "rejected")
                    if draw < 0.92
                    else ("rollback", "cancelled", "succeeded")
                )
                user = deciders[0] if rng.random() < 0.1 else rng.choice(deciders[1:])
                due = opened + timedelta(hours=4) if rng.random() < 0.5 else None
                rows["run"].append(
                    (
                        run_ids[k],
                        org_id,
                        version,
                        run_status,
                        "{}",
                        "",
                        1,
                        opened,
                        opened,
                        decided,
                        0,
                        "",
                        0,
                        1,
                        None,
                        "",
                        0,
                        "",
                        "",
                    )
                )
                rows["step"].append(
                    (
                        step_ids[k],
                        org_id,
                        run_ids[k],
                        "review",
                        1,
                        1,
                        "rejected" if action == "reject" else "succeeded",
                        None,
                        None,
                        "",
                        opened,
                        opened,
                        decided,
                    )
                )
                rows["task"].append(
                    (
                        org_id,
                        run_ids[k],
                        step_ids[k],
                        "review",
                        1,
                        "approval",
                        status,
                        role.pk,
                        "",
                        "{}",
                        1,
                        False,
                        due,
                        "",
                        opened,
                        pipeline_id,
                        decided,
                        user,
                    )
                )
                rows["dec"].append(
                    (
                        org_id,
                        task_ids[k],
                        user,
                        action,
                        "",
                        "s00" if action == "rollback" else "",
                        "web",
                        decided,
                    )
                )
            # The tasks take the ids reserved for them, so the decisions can name them.
            tasks = [(task_ids[k], *row) for k, row in enumerate(rows["task"])]
            copies = (
                ("pipelines_run", RUN_COLUMNS, rows["run"]),
                ("pipelines_steprun", STEP_COLUMNS, rows["step"]),
                ("approvals_humantask", ("id", *DECIDED_TASK_COLUMNS), tasks),
                ("approvals_decision", DECISION_COLUMNS, rows["dec"]),
            )
            for table, columns, found in copies:
                with raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in found:
                        copy.write_row(row)
            print(
                f"  seeded {chunk + count:,} decided tasks ({time.perf_counter() - started:.0f} s)"
            )
    return time.perf_counter() - started


def prepare_decided() -> float | None:
    """Seed the decided tasks unless present (after the open ones); the operator."""
    operator()
    present = decided_tasks()
    if present >= DECIDED:
        print(f"reusing the seed: {present:,} decided tasks")
        return None
    if present:
        raise BenchError(f"{present:,} decided {PREFIX} tasks, not {DECIDED:,}: drop the database")
    print(f"seeding {DECIDED:,} decided tasks with COPY ...")
    seconds = seed_decided()
    print(f"seeded in {seconds:.1f} s")
    # COPY went around the decision services: recount the insights' rollup as the
    # migration that added it did.
    from approvals import rollup

    started = time.perf_counter()
    days = rollup.rebuild()
    print(
        f"rollup recounted ({days[0]:,} + {days[1]:,} rows)"
        f" in {time.perf_counter() - started:.1f} s"
    )
    return seconds


def visible_tasks() -> int:
    """Open tasks of the measured organization."""
    from approvals.models import HumanTask

    return HumanTask.objects.filter(
        status=HumanTask.Status.OPEN, organization_id=organization_id()
    ).count()


def prepare_tasks() -> float | None:
    """Seed the tasks unless present; VACUUM ANALYZE the tables the pages read."""
    from django.db import connection

    reviewer()
    present = open_tasks()
    seconds = None
    if present >= TASKS:
        print(f"reusing the seed: {present:,} open tasks")
    else:
        if present:
            raise BenchError(
                f"{present:,} open {PREFIX} tasks, not {TASKS:,}: drop the database to reseed"
            )
        print(f"seeding {TASKS:,} open tasks with COPY ...")
        seconds = seed_tasks()
        print(f"seeded in {seconds:.1f} s; {open_tasks():,} open tasks")
    decided_s = prepare_decided()
    if decided_s is not None:
        seconds = (seconds or 0.0) + decided_s
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in (
            "pipelines_run",
            "pipelines_steprun",
            "pipelines_checkpoint",
            "pipelines_auditentry",
            "approvals_humantask",
            "approvals_decision",
            "pipelines_pipeline",
            "pipelines_pipelineversion",
            "pipelines_pipelinegrant",
            "orgs_organization",
            "orgs_membership",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")
    print(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")
    return seconds


# --- a 50-wide fan-out --------------------------------------------------------------

FANOUT = f"{PREFIX}-fanout"
FANOUT_WIDTH = 50
# Its small variant: the narrowest fan-out the picture draws as a group.
FANOUT_SMALL = 9


def fanout_name(width: int) -> str:
    return FANOUT if width == FANOUT_WIDTH else f"{FANOUT}-{width}"


def fanout_spec(width: int) -> dict[str, Any]:
    """prepare → part-00 … part-NN → join → review (approval) → publish."""
    parts = [f"part-{i:02d}" for i in range(width)]
    steps: list[dict[str, Any]] = [{"name": "prepare", "type": "noop"}]
    steps += [{"name": p, "type": "noop", "after": ["prepare"]} for p in parts]
    steps.append({"name": "join", "type": "noop", "after": parts})
    steps.append(
        {
            "name": "review",
            "type": "approval",
            "after": ["join"],
            "config": {"assignee_role": ROLE, "instructions": "Check the parts."},
        }
    )
    steps.append({"name": "publish", "type": "noop", "after": ["review"]})
    return {
        "name": fanout_name(width),
        "description": f"bench/pages.py: a {width}-wide fan-out",
        "steps": steps,
    }


def fanout_run(width: int = FANOUT_WIDTH) -> int:
    """The fan-out's one run in the measured organization, mid-flight, seeded once: of 50
    parts, 30 succeeded (5 of them on a second try), 10 running, 5 queued, 5 pending."""
    from django.db import transaction

    from pipelines import services
    from pipelines.models import Run, StepRun

    org_id = organization_id()
    found = Run.objects.filter(
        organization_id=org_id, pipeline_version__pipeline__name=fanout_name(width)
    ).values_list("pk", flat=True)
    if found:
        return found[0]
    now = datetime.now(UTC)
    with transaction.atomic():
        version = services.pipeline_create(
            spec=fanout_spec(width), organization=org_id, member_role="viewer"
        )
        start = now - timedelta(minutes=10)
        run = Run.objects.create(
            organization_id=org_id,
            pipeline_version=version,
            status=Run.Status.RUNNING,
            inputs={"document": "fanout.pdf"},
            created_at=start,
            started_at=start,
        )

        def row(name: str, status: str, at: float, ran: float | None, **fields: Any) -> StepRun:
            queued = start + timedelta(seconds=at)
            begun = queued + timedelta(seconds=1) if ran is not None else None
            return StepRun(
                organization_id=org_id,
                run=run,
                step_name=name,
                status=status,
                queued_at=queued,
                started_at=begun,
                finished_at=begun + timedelta(seconds=ran) if begun and ran else None,
                **fields,
            )

        rows = [row("prepare", "succeeded", 0, 2)]
        for i in range(width):
            name = f"part-{i:02d}"
            if i < width // 10:
                rows.append(row(name, "failed", 3, 4, error="timed out"))
                rows.append(row(name, "succeeded", 9, 20, attempt=2))
            elif i < width * 6 // 10:
                rows.append(row(name, "succeeded", 3, 10 + i))
            elif i < width * 8 // 10:
                rows.append(row(name, "running", 60 + i, 0))
            elif i < width * 9 // 10:
                rows.append(row(name, "queued", 100 + i, None))
            else:
                rows.append(StepRun(organization_id=org_id, run=run, step_name=name))
        for name in ("join", "review", "publish"):
            rows.append(StepRun(organization_id=org_id, run=run, step_name=name))
        StepRun.objects.bulk_create(rows)
    return run.pk


# --- timing ---------------------------------------------------------------------------


def task_of(pipeline: str, offset: int = 0, organization: str = MEASURED) -> tuple[int, int]:
    """(task id, run id) of an open bench task of `pipeline` in `organization`."""
    from approvals.models import HumanTask

    return (
        HumanTask.objects.filter(
            status=HumanTask.Status.OPEN,
            run__pipeline_version__pipeline__name=pipeline,
            organization__slug=organization,
        )
        .order_by("id")
        .values_list("pk", "run_id")[offset]
    )


def days_ago(days: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=days)).isoformat()


def pages() -> dict[str, dict[str, Any]]:
    """Each page: its URL, whether htmx asks for it, and its small variant's URL."""
    from pipelines.models import Run

    big = f"{PREFIX}-{PIPELINES - 1:02d}"
    small = f"{PREFIX}-00"
    task, task_run = task_of(big)
    _, run = task_of(big, 1)
    small_task, small_run = task_of(small)
    audit_seq = Run.objects.values_list("audit_seq", flat=True).get(pk=run)
    fan, small_fan = fanout_run(), fanout_run(FANOUT_SMALL)
    if audit_seq < 40:
        raise BenchError(f"run {run} has {audit_seq} audit entries, expected about 50")
    return {
        "inbox": {"url": "/", "small": f"/?pipeline={small}"},
        "inbox_table": {"url": "/", "small": f"/?pipeline={small}", "htmx": True},
        "inbox_count": {"url": "/inbox/count/", "htmx": True},
        "inbox_all": {"url": "/?view=all", "small": f"/?view=all&pipeline={small}"},
        "inbox_unassigned": {
            "url": "/?view=unassigned",
            "small": f"/?view=unassigned&pipeline={small}",
        },
        # Search by run inputs: every task matches, then none (the whole scan).
        "inbox_search": {"url": "/?view=all&q=.pdf", "small": f"/?q=.pdf&pipeline={small}"},
        "inbox_search_none": {"url": "/?q=no-such-document", "htmx": True},
        # The reviewer's ~10,000 decisions, newest first: the first page and a deep one.
        "archive": {"url": "/decided/", "small": "/decided/?page=2"},
        "archive_deep": {"url": "/decided/?page=150", "small": "/decided/?page=2"},
        # An operator's insights over the default 30 days (~50,000 decided tasks), over
        # all 60, and one section's CSV; small: pipeline 00 (50 decided tasks).
        "insights": {"url": "/insights/", "small": f"/insights/?pipeline={small}", "as": OPERATOR},
        "insights_60d": {
            "url": f"/insights/?from={days_ago(DECIDED_DAYS - 1)}",
            "small": f"/insights/?from={days_ago(DECIDED_DAYS - 1)}&pipeline={small}",
            "as": OPERATOR,
        },
        "insights_csv": {
            "url": "/insights/?format=csv&section=time_by_step",
            "small": f"/insights/?format=csv&section=time_by_step&pipeline={small}",
            "as": OPERATOR,
        },
        "task": {"url": f"/tasks/{task}/", "small": f"/tasks/{small_task}/"},
        "task_panel": {
            "url": f"/tasks/{task}/?part=panel",
            "small": f"/tasks/{small_task}/?part=panel",
            "htmx": True,
        },
        "runs": {"url": "/runs/", "small": f"/runs/?pipeline={small}"},
        "runs_table": {"url": "/runs/", "small": f"/runs/?pipeline={small}", "htmx": True},
        "run": {"url": f"/runs/{run}/", "small": f"/runs/{small_run}/"},
        "run_live": {
            "url": f"/runs/{run}/?part=live",
            "small": f"/runs/{small_run}/?part=live",
            "htmx": True,
        },
        "run_audit": {
            "url": f"/runs/{run}/?part=audit&audit_page=2",
            "small": f"/runs/{small_run}/?part=audit&audit_page=1",
            "htmx": True,
        },
        # A run of 50 parallel steps: its picture groups them, its timeline has 51 bars.
        "run_fanout": {"url": f"/runs/{fan}/", "small": f"/runs/{small_fan}/"},
        "run_fanout_live": {
            "url": f"/runs/{fan}/?part=live",
            "small": f"/runs/{small_fan}/?part=live",
            "htmx": True,
        },
        "run_fanout_open": {
            "url": f"/runs/{fan}/?expand=part-00",
            "small": f"/runs/{small_fan}/?expand=part-00",
        },
        "_task_run": {"url": f"/runs/{task_run}/"},  # not timed: the task's run exists
    }


CHECKS: dict[str, tuple[bytes, int]] = {
    # page: (marker, how many times it must appear at least)
    "inbox": (b'class="button small" href="/tasks/', 50),  # a full page
    "inbox_table": (b'class="button small" href="/tasks/', 50),
    "inbox_all": (b'class="button small" href="/tasks/', 50),
    "inbox_unassigned": (b'class="button small" href="/tasks/', 50),
    "inbox_search": (b'class="button small" href="/tasks/', 50),
    "task": (b">Approve</button>", 1),
    "task_panel": (b">Approve</button>", 1),
    "runs": (b'<progress max="', 25),
    "runs_table": (b'<progress max="', 25),
    "run": (b'<td class="muted">', 20),
    "run_live": (b"<svg", 1),
    "run_audit": (b'<td class="muted">', 20),
    "run_fanout": (b'class="tl-row"', 51),
    "run_fanout_live": (b'class="bar st-', 4),
    "run_fanout_open": (b'data-step="part-', 50),
    "archive": (b'<td><a href="/tasks/', 50),
    "archive_deep": (b'<td><a href="/tasks/', 50),
    "insights": (b'role="img"', 9),
    "insights_60d": (b'role="img"', 9),
    "insights_csv": (b"bench-pages-", 9),
}


def fetch(client: Any, url: str, htmx: bool) -> bytes:
    headers = {"HX-Request": "true"} if htmx else {}
    response = client.get(url, headers=headers)
    if response.status_code != 200:
        raise BenchError(f"GET {url} answered {response.status_code}, not 200")
    return bytes(response.content)


def count_queries(client: Any, url: str, htmx: bool) -> tuple[int, float, list[str]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fetch(client, url, htmx)
    # Read now: the next request's request_started signal empties the query log.
    queries = captured.captured_queries
    return len(queries), sum(float(q["time"]) for q in queries) * 1000, [q["sql"] for q in queries]


def time_pages(urls: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from django.test import Client

    from orgs.middleware import SESSION_KEY

    clients = {}
    for user in (reviewer(), operator()):
        client = clients[user.get_username()] = Client()
        client.force_login(user)
        session = client.session
        session[SESSION_KEY] = MEASURED
        session.save()
    client = clients[REVIEWER]
    fetch(client, urls.pop("_task_run")["url"], False)
    results = {}
    for name, page in urls.items():
        # Each page is read by the reviewer, unless it names another reader ("as").
        client = clients[page.get("as", REVIEWER)]
        url, htmx = page["url"], page.get("htmx", False)
        for _ in range(WARMUP):
            content = fetch(client, url, htmx)
        marker, least = CHECKS.get(name, (b"", 0))
        if content.count(marker) < least:
            raise BenchError(f"GET {url}: {marker!r} {content.count(marker)} times, not {least}")
        queries, sql_ms, sql = count_queries(client, url, htmx)
        small_queries = queries
        if "small" in page:
            fetch(client, page["small"], htmx)
            small_queries = count_queries(client, page["small"], htmx)[0]
        results[name] = {
            "url": url + (" (htmx)" if htmx else ""),
            **time_ms(partial(fetch, client, url, htmx), REPEATS),
            "queries": queries,
            "queries_small": small_queries,
            "sql_ms": round(sql_ms, 1),
            "bytes": len(content),
            "sql": sql,
        }
    return results


def explain_slowest(results: dict[str, dict[str, Any]], pages_missed: list[str]) -> None:
    """EXPLAIN ANALYZE the three slowest queries of each page that missed its target."""
    from django.db import connection

    for name in pages_missed:
        print(f"\n--- {name}: EXPLAIN ANALYZE of its queries ---")
        with connection.cursor() as cursor:
            timed = []
            for sql in results[name]["sql"]:
                if not sql.lstrip().upper().startswith("SELECT"):
                    continue
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
                plan = [row[0] for row in cursor.fetchall()]
                ms = float(plan[-1].split(":")[1].split()[0])
                timed.append((ms, sql, plan))
            for ms, sql, plan in sorted(timed, reverse=True)[:3]:
                print(f"{ms:.1f} ms  {sql[:300]}")
                print("\n".join(f"    {line}" for line in plan[:25]))


# --- report ---------------------------------------------------------------------------


def missed(r: dict[str, Any]) -> list[str]:
    why = []
    if r["p95_ms"] > TARGET_P95_MS:
        why.append("p95")
    if r["queries"] != r["queries_small"]:
        why.append("queries grow")
    return why


def print_table(results: dict[str, dict[str, Any]]) -> None:
    head = ("page", "p50 ms", "p95 ms", "max ms", "queries", "small", "SQL ms", "KiB", "", "url")
    rows = [head]
    for name, r in results.items():
        rows.append(
            (
                name,
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                f"{r['max_ms']:.1f}",
                str(r["queries"]),
                str(r["queries_small"]),
                f"{r['sql_ms']:.1f}",
                f"{r['bytes'] / 1024:.0f}",
                "MISSED: " + ", ".join(missed(r)) if missed(r) else "ok",
                r["url"],
            )
        )
    print_columns(rows)


# --- main -----------------------------------------------------------------------------


DECISION_PAGES = ("bulk_form", "bulk_api", "email_page", "email_decide")


def wanted() -> list[str]:
    return [n for n in os.environ.get("BENCH_PAGES", "").split(",") if n]


def chosen(urls: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pages named in BENCH_PAGES (comma separated), or all of them."""
    wanted_ = wanted()
    if wanted_ and all(n in DECISION_PAGES for n in wanted_):
        return {n: u for n, u in urls.items() if n.startswith("_")}
    unknown = [n for n in wanted_ if n not in urls and n not in DECISION_PAGES]
    if unknown:
        raise BenchError(f"BENCH_PAGES: no page named {', '.join(unknown)}")
    # The "_" entries are the bench's own set-up requests, made whatever is chosen.
    if not wanted_:
        return urls
    return {n: u for n, u in urls.items() if n in wanted_ or n.startswith("_")}


def run_bench() -> int:
    """Set up, seed if needed, time the pages, print the table and the JSON line."""
    # An email link decides without a session; the bench's many decisions are no flood.
    os.environ.setdefault("FIREFLY_EMAIL_ACTIONS", "true")
    os.environ.setdefault("FIREFLY_THROTTLE_DECIDE", "100000/min")
    database_url = configure_admin_env()
    setup(database_url)
    with database_errors():
        entries, _ = prepare(database_url)
        seed_s = prepare_tasks()
        results = time_pages(chosen(pages()))
        results.update(
            pages_decide.time_decisions(
                lambda name: not wanted() or name in wanted(), warmup=WARMUP, repeats=REPEATS
            )
        )
        failed = [name for name, r in results.items() if missed(r)]
        if failed:
            explain_slowest(results, [n for n in failed if "p95" in missed(results[n])])
    print()
    print(
        f"{entries:,} audit entries, {TASKS:,} open tasks in {ORGANIZATIONS} organizations;"
        f" reviewer {REVIEWER!r} (role {ROLE!r}) in {MEASURED!r}"
        f" ({visible_tasks():,} open tasks there); {REPEATS} timed requests per page after"
        f" {WARMUP}"
    )
    print_table(results)
    summary = {
        "entries": entries,
        "open_tasks": TASKS,
        "seed_s": round(seed_s, 1) if seed_s is not None else None,
        "repeats": REPEATS,
        "target_p95_ms": TARGET_P95_MS,
        "pages": {
            name: {k: r[k] for k in ("p50_ms", "p95_ms", "queries")} for name, r in results.items()
        },
        "worst_p95_ms": max(r["p95_ms"] for r in results.values()),
        "missed": {name: missed(r) for name, r in results.items() if missed(r)},
    }
    print(json.dumps(summary))
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main("bench/pages.py", run_bench))
