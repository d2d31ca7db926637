"""What a step handler receives (`StepContext`) and may return (`Pause`, `Handoff`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pause:
    """Returned by a python step to stop the run at that step until a person approves."""

    reason: str


@dataclass(frozen=True)
class Handoff:
    """Returned by a step to start a run of `pipeline` with `payload` as its inputs.

    The child run starts when the step's outcome commits. With `wait`, the step waits
    (holding no worker) until the child finishes, then ends as the child did: it
    succeeds with the child's output, is rejected, or fails.
    """

    pipeline: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    wait: bool = False


@dataclass(frozen=True)
class StepContext:
    run_id: int
    step_name: str
    generation: int
    attempt: int
    inputs: Mapping[str, Any]
    upstream: Mapping[str, Any]
    config: Mapping[str, Any]
    # Stable across attempts and redeliveries of this step in this generation: use it to
    # make external side effects idempotent.
    idempotency_key: str
    logger: logging.Logger
    extra: Mapping[str, Any] = field(default_factory=dict)
    step_run_id: int = 0
    # Set when the run is cancelled or the step times out; long handlers may poll it.
    cancelled: threading.Event = field(default_factory=threading.Event)
