"""Deciding many tasks at once: each checked, decided and audited on its own, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from approvals import guards, notifications, preferences, rollup, selectors, services
from approvals.models import Decision, HumanTask
from pipelines import fastpath
from pipelines.errors import FireflyError, InvalidInput, NotFound
from pipelines.services.unit_of_work import RunTxn

# One request decides at most this many tasks: the batch holds all their runs' locks
# until it commits, so a larger one would keep other deciders (and the engine) waiting
# on those runs, and a worker busy, for longer than a page or an API client waits.
BULK_MAX = 100
ACTIONS = ("approve", "reject")


@dataclass(frozen=True)
class Outcome:
    """What became of one task of the batch: decided, or refused with why."""

    task: int
    outcome: str
    status: str = ""
    reason: str = ""
    code: str = ""
    http_status: int = 200

    @property
    def decided(self) -> bool:
        return self.outcome == "decided"


def _problem(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, details=[{"field": field, "message": message}])


def task_ids(raw: list[Any]) -> list[int]:
    """The batch's ids in the order given, each once; a non-integer is named."""
    ids: list[int] = []
    for value in raw:
        try:
            task_id = int(value)
        except (TypeError, ValueError):
            raise _problem(f"{str(value)[:40]!r} is not a task id.", "tasks") from None
        if task_id < 1 or task_id > 2**63 - 1:
            raise _problem(f"{task_id} is not a task id.", "tasks")
        if task_id not in ids:
            ids.append(task_id)
    return ids


def tasks_decide(
    *,
    user: Any,
    organization: Any,
    action: str,
    task_ids: list[int],
    comment: str = "",
    channel: str = Decision.Channel.WEB,
) -> list[Outcome]:
    """Approve or reject each task on its own, with the guard and the writes of
    `task_approve`/`task_reject`, all in one transaction: each task in a savepoint of
    its own, so one refusal leaves the others decided and nothing of itself behind. A
    task the user may not open in this organization is "not found", exactly as when
    asked for alone."""
    if action not in ACTIONS:
        raise _problem(f"{action!r} is not an action here: approve or reject.", "action")
    if not task_ids:
        raise _problem("Choose at least one task.", "tasks")
    if len(task_ids) > BULK_MAX:
        raise _problem(
            f"{len(task_ids)} tasks at once is too many: at most {BULK_MAX} per request.",
            "tasks",
        )
    # PostgreSQL text cannot hold NUL characters; nobody means to write one.
    comment = comment.replace("\x00", "")
    if action == "reject" and not comment.strip():
        raise _problem("Say why you reject (one comment for every task).", "comment")
    if action == "approve":
        apply = services.approving(user=user, comment=comment, channel=channel)
    else:
        apply = services.rejecting(user=user, comment=comment, channel=channel)
    visible = dict(
        HumanTask.objects.filter(selectors.visible(user, organization), pk__in=task_ids)
        .order_by()
        .values_list("pk", "run_id")
    )
    results: dict[int, Result] = {}
    if visible:
        # Told after the commit, each task's requester and everyone's preferences are
        # read once for the batch, not once per task.
        with notifications.requesters_known(visible.values()), preferences.remembered():
            try:
                results = _decide_all(user, action, visible, apply, isolate=False)
            except _Isolate:
                # A decision failed halfway (the guard let it through, its writes did
                # not): the batch was rolled back whole, and goes again with a savepoint
                # per task.
                results = _decide_all(user, action, visible, apply, isolate=True)
    outcomes = []
    for task_id in task_ids:
        result = results.get(task_id) or NotFound(f"No task {task_id}.")
        if isinstance(result, HumanTask):
            outcomes.append(Outcome(task_id, "decided", status=result.status))
        else:
            outcomes.append(
                Outcome(
                    task_id,
                    "refused",
                    reason=result.message,
                    code=result.code,
                    http_status=result.http_status,
                )
            )
    return outcomes


Result = HumanTask | FireflyError


class _Isolate(Exception):
    """A task's decision failed after its first write, in a batch without savepoints."""


@transaction.atomic
def _decide_all(
    user: Any, action: str, run_of: dict[int, int], apply: guards.Apply, *, isolate: bool
) -> dict[int, Result]:
    """Lock the batch's runs (one statement, in id order) then its tasks, and decide each
    task as `guards.decide` does, under those locks.

    The locks are taken before any task is read: a task decided meanwhile by someone
    else (or by its deadline) is seen closed, and refused as when decided alone. A
    decision that fails once the guard let it through (rare: the step is no longer
    waiting, the task is not an approval) must leave nothing of its writes: with
    `isolate` each runs in a savepoint of its own, else the failure rolls back the batch
    and raises _Isolate, and the caller goes again with `isolate`.
    """
    runs = fastpath.lock_runs(list(run_of.values()))
    tasks = {
        task.pk: task
        for task in HumanTask.objects.select_for_update(of=("self",))
        .select_related("claimed_by", *notifications.LOADED)
        .filter(pk__in=list(run_of))
        .order_by("pk")
    }
    guards.prefetch_approvals(list(tasks.values()))
    results: dict[int, Result] = {}
    # The batch's Decision rows and day counts are written as it ends, in one go.
    with rollup.deferred() as pending, notifications.known(tasks.values()):
        decided_in: set[int] = set()  # runs changed by this batch so far
        for task_id, task in tasks.items():
            if task.run_id not in runs:
                continue  # gone with its run since the batch was read: not found
            if task.run_id in decided_in:
                # An earlier decision of the batch may have ended the run, and closed
                # this task with it: the guard must see the row as it is now.
                task.refresh_from_db(fields=["status", "decided_at", "decided_by"])
            decided_in.add(task.run_id)
            run, states = runs[task.run_id]
            txn = RunTxn(run, user, states)
            refusal = guards.refusal_for(task, user, action, txn)
            if refusal is not None:
                guards.audit_refusal(txn, task, action, refusal)
                txn.flush()
            elif not isolate:
                try:
                    apply(txn, task)
                except FireflyError as exc:
                    raise _Isolate from exc
                txn.flush()
            else:
                status, mark = task.status, pending.mark()
                try:
                    with transaction.atomic():
                        apply(txn, task)
                        txn.flush()
                except FireflyError as exc:
                    refusal = exc
                    # The savepoint took back the writes, not what this process holds
                    # of them: forget its pending rows and read the run again (still
                    # locked) before its next entry is chained to it.
                    pending.undo(mark)
                    runs.update(fastpath.lock_runs([task.run_id]))
                    task.status = status
                    run, states = runs[task.run_id]
                    txn = RunTxn(run, user, states)
                    guards.audit_refusal(txn, task, action, refusal)
                    txn.flush()
            results[task_id] = task if refusal is None else _firefly(refusal)
    return results


def _firefly(refusal: Exception) -> FireflyError:
    assert isinstance(refusal, FireflyError), refusal
    return refusal
