"""Every state change of pipelines and runs, each in one transaction with its audit entries."""

from typing import Any

from django.conf import settings

from pipelines.models import PipelineVersion
from pipelines.services import outbox
from pipelines.services.execution import (
    OutcomeQueue,
    Started,
    step_begin,
    step_execute,
    step_finish,
)
from pipelines.services.finishing import Harness, Unsettled, run_finalize, unsettled
from pipelines.services.handlers import LazyUpstream, Outcome, StepTimeout
from pipelines.services.handoffs import acknowledge_handoff, handoff_settle, open_handoff
from pipelines.services.hooks import cancel_hooks, pause_hooks, unsettled_sources
from pipelines.services.outbox import outbox_relay, outbox_sweep, outbox_write
from pipelines.services.recovery import ReapReport, reap
from pipelines.services.retention import RetentionReport, retention_apply, run_redact
from pipelines.services.runs import (
    checkpoint_state,
    decided_elsewhere,
    refuse_operation,
    run_advance,
    run_cancel,
    run_fork,
    run_resume,
    run_rollback,
    run_start,
    run_start_or_replay,
)
from pipelines.services.unit_of_work import (
    RunTxn,
    Snapshot,
    StaleRun,
    locked_run,
    pipeline_audit,
    step_states,
)
from pipelines.versions import VersionInfo, pipeline_version, version_info, version_spec
from pipelines.versions import pipeline_create_or_get as _create_or_get


def pipeline_create(
    *, spec: Any, actor: Any = None, organization: Any = None, member_role: str | None = None
) -> PipelineVersion:
    """As `pipelines.versions.pipeline_create`; see `pipeline_create_or_get`."""
    return pipeline_create_or_get(
        spec=spec, actor=actor, organization=organization, member_role=member_role
    )[0]


def pipeline_create_or_get(
    *, spec: Any, actor: Any = None, organization: Any = None, member_role: str | None = None
) -> tuple[PipelineVersion, bool]:
    """As `pipelines.versions.pipeline_create_or_get`, and a new version's audit entry
    goes to the sinks: its outbox rows are relayed once the transaction commits."""
    version, created = _create_or_get(
        spec=spec, actor=actor, organization=organization, member_role=member_role
    )
    if created and settings.FIREFLY_AUDIT_SINKS:
        outbox.relay_on_commit()
    return version, created


__all__ = [
    "Harness",
    "LazyUpstream",
    "Outcome",
    "OutcomeQueue",
    "ReapReport",
    "RetentionReport",
    "RunTxn",
    "Snapshot",
    "StaleRun",
    "Started",
    "StepTimeout",
    "Unsettled",
    "VersionInfo",
    "acknowledge_handoff",
    "cancel_hooks",
    "checkpoint_state",
    "decided_elsewhere",
    "handoff_settle",
    "locked_run",
    "open_handoff",
    "outbox_relay",
    "outbox_sweep",
    "outbox_write",
    "pause_hooks",
    "pipeline_audit",
    "pipeline_create",
    "pipeline_create_or_get",
    "pipeline_version",
    "reap",
    "refuse_operation",
    "retention_apply",
    "run_advance",
    "run_cancel",
    "run_finalize",
    "run_fork",
    "run_redact",
    "run_resume",
    "run_rollback",
    "run_start",
    "run_start_or_replay",
    "step_begin",
    "step_execute",
    "step_finish",
    "step_states",
    "unsettled",
    "unsettled_sources",
    "version_info",
    "version_spec",
]
