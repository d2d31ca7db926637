"""Workers on several simulated hosts (network namespaces): branches spread across them,
and a host cut off mid-step whose late outcome is refused when the partition heals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings

from pipelines import services
from pipelines.audit import chains, verify_chain
from pipelines.models import AuditEntry, Run
from tests.conftest import audit_counts, reap_until_finished, wait_finished, wait_for
from tests.hosts import Host, hosts
from tests.workers import WorkerProcess, database_url

pytestmark = pytest.mark.worker

LEASE = {"FIREFLY_STEP_LEASE_S": "2"}


@pytest.fixture
def two_hosts(worker: WorkerProcess) -> Iterator[list[Host]]:
    """Two worker hosts; the session's worker (on this machine) is stopped meanwhile."""
    services_here = {
        "database": urlsplit(database_url()).port or 5432,
        "broker": urlsplit(django_settings.CELERY_BROKER_URL).port or 6379,
    }
    worker.stop()
    try:
        with hosts(2, services_here) as made:
            yield made
    finally:
        worker.start()


def test_a_runs_parallel_branches_execute_on_both_worker_hosts(two_hosts, make_pipeline):
    workers = [WorkerProcess(f"host{host.index}", concurrency=2, host=host) for host in two_hosts]
    try:
        for started in workers:
            started.start()
        where = {"callable": "tests.pipelines.callables.where_slowly"}
        branches = [f"b{i}" for i in range(8)]
        name = make_pipeline(
            [
                {"name": "start", "type": "noop"},
                *(
                    {"name": b, "type": "python", "after": ["start"], "config": where}
                    for b in branches
                ),
                {"name": "join", "type": "noop", "after": branches},
            ]
        )
        run = wait_finished(services.run_start(pipeline=name, inputs={}), timeout=60)
    finally:
        for started in workers:
            started.stop()
    assert run.status == Run.Status.SUCCEEDED
    ran_on = {run.steps.get(step_name=b).outputs["worker"] for b in branches}
    assert ran_on == {w.node for w in workers}
    assert audit_counts(run, "step.succeeded") == Counter(
        {"start": 1, "join": 1, **dict.fromkeys(branches, 1)}
    )


def test_a_partitioned_host_loses_its_step_and_its_late_outcome_is_refused_after_healing(
    two_hosts, make_pipeline, settings
):
    cut_off, other = two_hosts
    first = WorkerProcess("cut-off", host=cut_off, env=LEASE)
    second = WorkerProcess("other", host=other, env=LEASE)
    settings.FIREFLY_REQUEUE_AFTER_S = 1
    try:
        first.start()
        name = make_pipeline(
            [
                {"name": "before", "type": "noop"},
                {"name": "slow", "type": "sleep", "after": ["before"], "config": {"seconds": 4}},
                {"name": "after", "type": "noop", "after": ["slow"]},
            ]
        )
        run = services.run_start(pipeline=name, inputs={})
        wait_for(
            lambda: run.steps.filter(step_name="slow", status="running").exists(),
            message="slow running on the host to be cut off",
        )
        cut_off.cut()
        second.start()

        def finished() -> bool:
            services.reap()  # the lease the cut-off host can no longer renew runs out
            run.refresh_from_db()
            return run.is_finished

        wait_for(finished, timeout=60, message="the run to finish on the other host")
        assert run.status == Run.Status.SUCCEEDED
        cut_off.heal()
        wait_for(
            lambda: AuditEntry.objects.filter(run=run, event="step.outcome_dropped").exists(),
            timeout=90,
            message="the cut-off host's late outcome to be refused",
        )
    finally:
        cut_off.heal()
        first.stop()
        second.stop()

    attempts = list(
        run.steps.filter(step_name="slow").order_by("attempt").values_list("status", "error")
    )
    assert [status for status, _ in attempts] == ["failed", "succeeded"]
    assert "worker lost" in attempts[0][1]
    assert audit_counts(run, "step.succeeded") == {"before": 1, "slow": 1, "after": 1}
    assert audit_counts(run, "step.outcome_dropped") == {"slow": 1}
    assert run.checkpoints.filter(step_name="slow").count() == 1
    assert all(verify_chain(*found) is None for found in chains(run.pk))


def chain_with_slow_step(make_pipeline: Any) -> str:
    return make_pipeline(
        [
            {"name": "before", "type": "noop"},
            {"name": "slow", "type": "sleep", "after": ["before"], "config": {"seconds": 3}},
            {"name": "after", "type": "noop", "after": ["slow"]},
            {"name": "last", "type": "noop", "after": ["after"]},
        ]
    )


def test_a_host_that_loses_the_broker_but_not_the_database_loses_no_step(
    two_hosts, make_pipeline, settings
):
    """Its running step still commits (the database is there), and what comes next is
    run by it or, sent again by the reaper, by the other host: each step once."""
    unlucky, other = two_hosts
    first = WorkerProcess("no-broker", host=unlucky, env=LEASE)
    second = WorkerProcess("other", host=other, env=LEASE)
    settings.FIREFLY_REQUEUE_AFTER_S = 1
    try:
        first.start()
        run = services.run_start(pipeline=chain_with_slow_step(make_pipeline), inputs={})
        wait_for(
            lambda: run.steps.filter(step_name="slow", status="running").exists(),
            message="slow running",
        )
        unlucky.relays["broker"].block()
        second.start()
        run = reap_until_finished(run)
    finally:
        first.stop()
        second.stop()
    assert run.status == Run.Status.SUCCEEDED
    assert audit_counts(run, "step.succeeded") == {"before": 1, "slow": 1, "after": 1, "last": 1}
    assert run.checkpoints.count() == 4
    assert all(verify_chain(*found) is None for found in chains(run.pk))


def test_a_host_that_loses_the_database_but_not_the_broker_hands_its_step_on(
    two_hosts, make_pipeline, settings
):
    """Its step cannot commit nor renew its lease: the reaper gives it to the other host,
    and the first host's attempt, back on the database, commits nothing."""
    unlucky, other = two_hosts
    first = WorkerProcess("no-database", host=unlucky, env=LEASE)
    second = WorkerProcess("other", host=other, env=LEASE)
    settings.FIREFLY_REQUEUE_AFTER_S = 1
    try:
        first.start()
        run = services.run_start(pipeline=chain_with_slow_step(make_pipeline), inputs={})
        wait_for(
            lambda: run.steps.filter(step_name="slow", status="running").exists(),
            message="slow running",
        )
        unlucky.relays["database"].block()
        second.start()
        run = reap_until_finished(run)
        unlucky.relays["database"].unblock()
    finally:
        first.stop()
        second.stop()
    assert run.status == Run.Status.SUCCEEDED
    slow = list(
        run.steps.filter(step_name="slow").order_by("attempt").values_list("status", "error")
    )
    assert [status for status, _ in slow] == ["failed", "succeeded"]
    assert "worker lost" in slow[0][1]
    assert audit_counts(run, "step.succeeded") == {"before": 1, "slow": 1, "after": 1, "last": 1}
    assert run.checkpoints.filter(step_name="slow").count() == 1
    assert all(verify_chain(*found) is None for found in chains(run.pk))
