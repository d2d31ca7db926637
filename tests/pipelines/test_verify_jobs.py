"""verify_audit checks run chains in several processes, and finds a break in any of them."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from pipelines import audit
from pipelines.models import AuditEntry
from tests.pipelines.test_audit import TABLE, finished_run, tamper, verify

# Committed rows: the checking processes open connections of their own.
pytestmark = pytest.mark.django_db(transaction=True)


def test_several_processes_check_every_chain_and_name_a_break_in_the_last_range():
    runs = [finished_run(f"p{i}") for i in range(4)]
    total = AuditEntry.objects.count()
    assert audit.verify(jobs=3) == (total, None)
    assert f"checked {total} entries" in verify("--jobs", "3")

    last = runs[-1]
    tamper(f"UPDATE {TABLE} SET status = 'forged' WHERE run_id = {last.pk} AND seq = 2")
    _, problem = audit.verify(jobs=3)
    assert problem is not None
    assert (problem.chain, problem.seq, problem.kind) == (f"run {last.pk}", 2, "edited")
    with pytest.raises(CommandError, match=rf"run {last.pk} seq 2 .*: edited"):
        verify("--jobs", "2")


def test_a_chain_whose_run_row_is_gone_without_a_purge_record_is_named():
    run = finished_run()
    tamper(
        f"UPDATE {TABLE} SET status = 'forged' WHERE run_id = {run.pk} AND seq = 2",
        f"DELETE FROM pipelines_steprun WHERE run_id = {run.pk}",
        f"DELETE FROM pipelines_checkpoint WHERE run_id = {run.pk}",
        f"DELETE FROM pipelines_run WHERE id = {run.pk}",
    )
    for jobs in (1, 2):
        _, problem = audit.verify(jobs=jobs)
        assert problem is not None
        assert (problem.chain, problem.kind) == (f"run {run.pk}", "deleted")
        assert "no retention purge recorded it" in problem.message


def test_jobs_must_be_at_least_one():
    with pytest.raises(CommandError, match="--jobs must be at least 1"):
        verify("--jobs", "0")
