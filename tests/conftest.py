"""Shared fixtures: users, a real Celery worker process, and waiting for runs."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.management import CommandError
from kombu import Queue

from firefly_site.celery import app
from orgs.models import Membership, Organization
from pipelines import services
from pipelines.models import AuditEntry, HandoffEnvelope, Run
from tests.workers import WorkerProcess


@pytest.fixture(scope="session", autouse=True)
def flush_outlasts_a_deadlock() -> Iterator[None]:
    """Emptying the tables after a transactional test TRUNCATEs them one lock at a time;
    a worker process still finishing the test's last task (a relay, a delivery) can lock
    two of them in the other order, and PostgreSQL then cancels the flush as a deadlock.
    The worker's transaction goes on and ends: the flush is tried again."""
    from django.core.management.commands import flush
    from django.db import OperationalError

    handle = flush.Command.handle

    def retried(self: Any, **options: Any) -> Any:
        for attempt in range(5):
            try:
                return handle(self, **options)
            except CommandError as exc:
                cause = exc.__cause__
                if not isinstance(cause, OperationalError) or "deadlock" not in str(cause):
                    raise
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return None

    flush.Command.handle = retried  # type: ignore[method-assign]
    yield
    flush.Command.handle = handle  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> None:
    """Rate-limit counters live in the process's cache: each test starts with none."""
    cache.clear()


# Where a test without a worker sends its messages: no worker consumes this queue.
UNCONSUMED_QUEUE = "firefly-tests-unconsumed"


@pytest.fixture(autouse=True)
def messages_reach_a_worker_only_in_its_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test without the `worker` fixture drives its runs in its own process.

    The session's worker stays up between the tests that use it; were a test without
    it to send its messages to the worker's queue, the worker would take that test's
    steps from under it (and run them with settings the test did not set).
    """
    if "worker" in request.fixturenames:
        yield
        return
    consumed = app.conf.task_default_queue
    app.conf.task_default_queue = UNCONSUMED_QUEUE
    try:
        yield
    finally:
        app.conf.task_default_queue = consumed
        with app.connection_for_write() as connection:
            Queue(UNCONSUMED_QUEUE)(connection).purge()


@pytest.fixture(scope="session")
def worker_process(django_db_setup: Any, django_db_blocker: Any) -> Iterator[WorkerProcess]:
    """One worker process for the session, on the test database and the test broker."""
    app.control.purge()
    worker = WorkerProcess("main")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def worker(transactional_db: Any, worker_process: WorkerProcess) -> WorkerProcess:
    """A running worker; the test's own writes are committed so the worker sees them."""
    if worker_process.process is None or worker_process.process.poll() is not None:
        worker_process.start()
    return worker_process


def wait_for(check: Callable[[], Any], timeout: float = 20.0, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or check}")


def reap_until_finished(run: Run, timeout: float = 60.0) -> Run:
    """Run the reaper (as beat would) until the run ends; the run, fresh."""

    def finished() -> bool:
        services.reap()
        run.refresh_from_db()
        return run.is_finished

    wait_for(finished, timeout=timeout, message=f"run {run.pk} to finish")
    return run


def audit_counts(run: Run, event: str) -> Counter[str]:
    """How many entries of one event the run's audit trail holds, by step."""
    found = AuditEntry.objects.filter(run=run, event=event)
    return Counter(found.values_list("step_name", flat=True))


def wait_finished(run: Run, timeout: float = 20.0) -> Run:
    """Wait until a run ends, then return it fresh from the database."""

    def finished() -> bool:
        run.refresh_from_db()
        return run.is_finished

    wait_for(finished, timeout, f"run {run.pk} to finish (status {run.status})")
    return run


@pytest.fixture
def make_pipeline(db: Any) -> Callable[..., str]:
    """Create a pipeline from a list of steps; returns its name."""
    counter = iter(range(1, 10_000))

    def make(steps: list[dict[str, Any]], name: str = "", **extra: Any) -> str:
        name = name or f"test-{next(counter)}"
        # Open to every member of the default organization as a starter, as an admin
        # would mark a shared pipeline; the access tests make their own.
        services.pipeline_create(
            spec={"name": name, "steps": steps, **extra}, member_role="starter"
        )
        return name

    return make


@pytest.fixture
def users(db: Any, django_user_model: Any) -> dict[str, Any]:
    """starter runs pipelines; r1..r3 are reviewers; outsider is in no group; boss is staff."""
    reviewers = Group.objects.create(name="reviewers")
    made = {}
    for name in ("starter", "r1", "r2", "r3", "outsider", "boss"):
        made[name] = django_user_model.objects.create_user(
            name, email=f"{name}@example.com", password="x", is_staff=name == "boss"
        )
    for name in ("r1", "r2", "r3"):
        made[name].groups.add(reviewers)
    # Everyone is a member of the default organization; boss administers it (as staff
    # did before organizations).
    org = Organization.objects.default()
    for name, user in made.items():
        role = Membership.Role.ADMIN if name == "boss" else Membership.Role.MEMBER
        Membership.objects.create(user=user, organization=org, role=role)
    return made


@pytest.fixture
def hand_off(
    make_pipeline: Callable[..., str], users: dict[str, Any]
) -> Callable[..., HandoffEnvelope]:
    """Envelopes to show: from `origin` to a run of a one-step pipeline, its child.

    For the page, API and admin tests; the engine opens envelopes in pipelines.services.handoffs.
    """
    target = make_pipeline([{"name": "intake", "type": "noop"}], name="intake")

    def make(
        origin: Run, *, to: str = target, started: bool = True, **fields: Any
    ) -> HandoffEnvelope:
        child = None
        if started:
            child = services.run_start(
                pipeline=to, inputs={}, actor=users["starter"], parent=origin
            )
            # As if a worker had picked it up: the envelope counts as accepted.
            Run.objects.filter(pk=child.pk).update(started_at=child.created_at)
        count = HandoffEnvelope.objects.filter(origin_run=origin).count()
        fields.setdefault("origin_step", "review")
        return HandoffEnvelope.objects.create(
            organization_id=origin.organization_id,
            origin_run=origin,
            key=f"handoff-{count + 1}",
            target_pipeline=to,
            child_run=child,
            **fields,
        )

    return make


@pytest.fixture
def smtp_server() -> Any:
    """A real SMTP server on 127.0.0.1 that keeps what it receives."""
    received: list[bytes] = []

    class Keep:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.content)
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()
