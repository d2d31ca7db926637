"""PostgreSQL, Redis and beat restarted under running runs, on services of the tests' own:
every run succeeds, every step commits once, nothing is lost."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from tests.own_services import ROOT, Deployment, Process, own_deployment

pytestmark = pytest.mark.own_services

LEASE_S = 3.0
SETTINGS = {
    "FIREFLY_STEP_LEASE_S": str(LEASE_S),
    "FIREFLY_REQUEUE_AFTER_S": "2",
    "FIREFLY_REAPER_INTERVAL_S": "1",
}
CHAIN = [f"s{i}" for i in range(200)]
FANOUT = ["start", *(f"b{i}" for i in range(50)), "join"]
DRIVERS: list[subprocess.Popen[bytes]] = []  # stopped after each test, whatever happens


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """One migrated deployment for the module (migrating takes most of a minute)."""
    with own_deployment(SETTINGS) as made:
        yield made


@pytest.fixture
def firefly(deployment: Deployment) -> Iterator[Deployment]:
    """Two workers and beat running on the deployment, whatever the last test left."""
    for name in ("a", "b"):
        if not any(p.alive() and p.name.startswith(f"{name}-") for p in deployment.processes):
            deployment.worker(name)
    if not any(p.alive() and p.name == "beat" for p in deployment.processes):
        deployment.beat()
    try:
        yield deployment
    except BaseException:
        sys.stderr.write(deployment.logs())
        raise
    finally:
        for driver in DRIVERS:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        DRIVERS.clear()


def wait_for(check: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except psycopg.OperationalError:
            result = None  # the database is restarting
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def start_runs(firefly: Deployment, *runs: str) -> tuple[subprocess.Popen[bytes], int]:
    """The driver, in the background, so that the test sees the runs as they start."""
    (newest,) = firefly.query("SELECT coalesce(max(id), 0) FROM pipelines_run")[0]
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_driver", *runs],
        cwd=ROOT,
        env=firefly.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    DRIVERS.append(driver)
    return driver, int(newest)


def driver_ids(driver: subprocess.Popen[bytes]) -> list[int]:
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 0, out.decode(errors="replace")
    return [int(i) for i in out.decode().split()[-2:]]


def when_both_are_under_way(firefly: Deployment, after: int) -> datetime:
    """Once the chain and the fan-out have both committed a step (the fan-out's branches
    are queued), returns the database's time: the fault falls in both runs' middle."""
    with psycopg.connect(firefly.database_url, autocommit=True) as conn:

        def under_way() -> datetime | None:
            rows = conn.execute(
                "SELECT r.id, count(s.id), now() FROM pipelines_run r LEFT JOIN "
                "pipelines_steprun s ON s.run_id = r.id AND s.status = 'succeeded' "
                "WHERE r.id > %s GROUP BY r.id",
                (after,),
            ).fetchall()
            if len(rows) == 2 and all(done >= 1 for _, done, _ in rows):
                moment: datetime = rows[0][2]
                return moment
            return None

        found: datetime = wait_for(
            under_way, timeout=90, message="the chain and the fan-out to be under way"
        )
        return found


def wait_all_finished(firefly: Deployment, run_ids: list[int], timeout: float) -> None:
    def finished() -> bool:
        firefly.supervise()
        rows = firefly.query("SELECT status FROM pipelines_run WHERE id = ANY(%s)", run_ids)
        return len(rows) == len(run_ids) and all(
            s in ("succeeded", "failed", "cancelled") for (s,) in rows
        )

    try:
        wait_for(finished, timeout=timeout, message=f"runs {run_ids} to finish")
    except AssertionError as timed_out:
        stuck = firefly.query(
            "SELECT run_id, step_name, status, attempt, started_at, queued_at, lease_until "
            "FROM pipelines_steprun WHERE run_id = ANY(%s) AND status IN ('queued', 'running') "
            "ORDER BY id LIMIT 5",
            run_ids,
        )
        entries = firefly.query(
            "SELECT run_id, step_name, event, created_at, completed_at FROM pipelines_auditentry "
            "WHERE run_id = ANY(%s) ORDER BY id DESC LIMIT 5",
            run_ids,
        )
        raise AssertionError(f"{timed_out}; stuck {stuck}; last entries {entries}") from None


def per_step(firefly: Deployment, sql: str, run_id: int) -> Counter[str]:
    return Counter({str(name): int(n) for name, n in firefly.query(sql, run_id)})


def assert_each_step_committed_once(firefly: Deployment, run_id: int, steps: list[str]) -> None:
    once = Counter(dict.fromkeys(steps, 1))
    ((status,),) = firefly.query("SELECT status FROM pipelines_run WHERE id = %s", run_id)
    assert status == "succeeded", f"run {run_id} {status}"
    succeeded = per_step(
        firefly,
        "SELECT step_name, count(*) FROM pipelines_steprun WHERE run_id = %s "
        "AND status = 'succeeded' GROUP BY step_name",
        run_id,
    )
    assert succeeded == once
    checkpoints = per_step(
        firefly,
        "SELECT step_name, count(*) FROM pipelines_checkpoint WHERE run_id = %s "
        "AND kind = 'step' GROUP BY step_name",
        run_id,
    )
    assert checkpoints == once
    audited = per_step(
        firefly,
        "SELECT step_name, count(*) FROM pipelines_auditentry WHERE run_id = %s "
        "AND event = 'step.succeeded' GROUP BY step_name",
        run_id,
    )
    assert audited == once
    unfinished = firefly.query(
        "SELECT step_name, status FROM pipelines_steprun WHERE run_id = %s "
        "AND status NOT IN ('succeeded', 'failed')",
        run_id,
    )
    assert unfinished == []
    assert "audit trail intact" in firefly.manage("verify_audit", "--run", str(run_id))


def finished_after(firefly: Deployment, run_ids: list[int], moment: datetime) -> None:
    """The fault fell in the middle of each run: none had finished when it began."""
    for run_id, finished_at in firefly.query(
        "SELECT id, finished_at FROM pipelines_run WHERE id = ANY(%s)", run_ids
    ):
        assert finished_at > moment, f"run {run_id} finished before the fault"


def chain_and_fan_out_through(firefly: Deployment, fault: Callable[[], None]) -> list[int]:
    """A 200-step chain and a 50-way fan-out with the fault in both runs' middle: each
    succeeds with every step committed once. Their ids."""
    driver, after = start_runs(firefly, "chain:200", "fanout:50")
    before_fault = when_both_are_under_way(firefly, after)
    fault()
    chain, fanout = driver_ids(driver)
    wait_all_finished(firefly, [chain, fanout], timeout=120)
    finished_after(firefly, [chain, fanout], before_fault)
    assert_each_step_committed_once(firefly, chain, CHAIN)
    assert_each_step_committed_once(firefly, fanout, FANOUT)
    return [chain, fanout]


def test_postgresql_restarted_under_a_long_chain_and_a_wide_fan_out_with_beat_away(firefly):
    """With beat away nobody recovers a lost message or a lost step: the workers wait the
    restart out themselves (a claim or an outcome tried again, a message delivered again),
    and no step is lost or retried as lost."""
    next(p for p in firefly.processes if p.name == "beat" and p.alive()).stop()
    runs = chain_and_fan_out_through(firefly, firefly.postgres.restart)
    lost = firefly.query(
        "SELECT count(*) FROM pipelines_auditentry WHERE run_id = ANY(%s) AND event = 'step.lost'",
        runs,
    )
    assert lost == [(0,)]


def test_redis_restarted_empty_in_the_middle_of_a_long_chain_and_a_wide_fan_out(firefly):
    # Killed: its queued and unacknowledged messages are gone; the reaper sends them again.
    chain_and_fan_out_through(firefly, firefly.redis.restart)


def test_beat_stopped_longer_than_a_lease_while_a_worker_dies_mid_step(firefly):
    """Nobody recovers the dead worker's step while beat is away; once it is back, the
    reaper does, and the run completes with each step committed once."""
    beat = next(p for p in firefly.processes if p.name == "beat" and p.alive())
    driver, after = start_runs(firefly, "slow:3")
    driver.communicate(timeout=60)
    assert driver.returncode == 0
    ((run_id,),) = firefly.query("SELECT id FROM pipelines_run WHERE id > %s", after)
    wait_for(
        lambda: firefly.query(
            "SELECT 1 FROM pipelines_steprun WHERE run_id = %s AND step_name = 'slow' "
            "AND status = 'running'",
            run_id,
        ),
        timeout=60,
        message="the slow step to run",
    )
    beat.stop()
    workers: list[Process] = [p for p in firefly.processes if p.alive() and p.name != "beat"]
    for worker in workers:
        worker.kill()  # whichever runs the step dies with it
    firefly.worker("a")
    firefly.worker("b")
    time.sleep(2 * LEASE_S)
    slow = firefly.query(
        "SELECT status FROM pipelines_steprun WHERE run_id = %s AND step_name = 'slow' "
        "ORDER BY attempt",
        run_id,
    )
    assert slow == [("running",)], "without beat, nothing takes the dead worker's step"
    firefly.beat()
    wait_all_finished(firefly, [run_id], timeout=90)
    attempts = firefly.query(
        "SELECT status, error FROM pipelines_steprun WHERE run_id = %s AND step_name = 'slow' "
        "ORDER BY attempt",
        run_id,
    )
    assert [status for status, _ in attempts] == ["failed", "succeeded"]
    assert "worker lost" in str(attempts[0][1])
    assert_each_step_committed_once(firefly, run_id, ["before", "slow", "after", "last"])


def test_a_run_started_while_redis_is_down_is_started_and_completes_once_it_is_back(firefly):
    """The start commits the run and answers with it; its first message, which the broker
    could not take, is sent again by the reaper once Redis is back."""
    firefly.redis.stop()
    try:
        driver, after = start_runs(firefly, "chain:20")
        out, _ = driver.communicate(timeout=90)
        assert driver.returncode == 0, out.decode(errors="replace")
    finally:
        firefly.redis.start()
    run_id = int(out.decode().split()[-1])
    assert run_id > after
    wait_all_finished(firefly, [run_id], timeout=90)
    assert_each_step_committed_once(firefly, run_id, [f"s{i}" for i in range(20)])
