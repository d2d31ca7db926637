"""What a step handler receives (`StepContext`) and may return (`Pause`)."""

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
    # Set when the run is cancelled or the step times out; long handlers may poll it.
    cancelled: threading.Event = field(default_factory=threading.Event)
