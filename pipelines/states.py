"""The status vocabulary of runs and steps, and which attempt of a step is its current one."""

# Pure Python on purpose: the engine, the DAG picture and the models all read these
# names, and none of them should need Django (or each other) to agree on a status.

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol, TypeVar

PENDING = "pending"  # a step waits for its upstream steps; a run was not started yet
QUEUED = "queued"
RUNNING = "running"
WAITING = "waiting"  # for a person, or for a handoff's child run
SUCCEEDED = "succeeded"
FAILED = "failed"
REJECTED = "rejected"
SKIPPED = "skipped"
CANCELLED = "cancelled"

STEP_STATUSES = (
    PENDING,
    QUEUED,
    RUNNING,
    WAITING,
    SUCCEEDED,
    FAILED,
    REJECTED,
    SKIPPED,
    CANCELLED,
)
RUN_STATUSES = (PENDING, RUNNING, WAITING, SUCCEEDED, FAILED, REJECTED, CANCELLED)

# A step in flight: the run cannot end while one of its steps is.
ACTIVE = frozenset({QUEUED, RUNNING, WAITING})
TERMINAL = frozenset({SUCCEEDED, FAILED, REJECTED, SKIPPED, CANCELLED})
# A step that counts as done in a run's progress.
DONE = frozenset({SUCCEEDED, SKIPPED})
RUN_FINISHED = frozenset({SUCCEEDED, FAILED, REJECTED, CANCELLED})


class StepState(NamedTuple):
    """The latest attempt of one step: what the engine and the DAG picture know of it."""

    id: int
    status: str
    generation: int
    attempt: int


class Attempt(Protocol):
    @property
    def generation(self) -> int: ...

    @property
    def attempt(self) -> int: ...


A = TypeVar("A", bound=Attempt)


def is_later(row: Attempt, than: Attempt) -> bool:
    """Whether `row` is a later attempt of its step than `than`.

    A roll back starts a new generation and a retry a new attempt within it, so the
    current attempt is the highest (generation, attempt), whatever the order of the rows.
    """
    return (row.generation, row.attempt) > (than.generation, than.attempt)


def latest(rows: Iterable[tuple[str, A]]) -> dict[str, A]:
    """Each step's current attempt among (step name, attempt) pairs."""
    current: dict[str, A] = {}
    for name, row in rows:
        seen = current.get(name)
        if seen is None or is_later(row, seen):
            current[name] = row
    return current
