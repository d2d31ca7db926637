"""The interactive step types (approval, input, choice) and the Pause hook."""

from __future__ import annotations

from typing import Any

from approvals.models import HumanTask
from pipelines import registry, schemas
from pipelines.models import StepRun
from pipelines.services import hooks
from pipelines.services.unit_of_work import RunTxn
from pipelines.spec import StepSpec

COMMON: dict[str, Any] = {
    "assignee": {"type": "string", "minLength": 1},
    "assignee_role": {"type": "string", "minLength": 1},
    "timeout_hours": {"type": "number", "exclusiveMinimum": 0},
    "remind_before_hours": {"type": "number", "exclusiveMinimum": 0},
    "on_timeout": {"type": "string", "pattern": "^(reject|approve|escalate:.+)$"},
    "allow_self_approval": {"type": "boolean"},
    "instructions": {"type": "string"},
    "context": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "inputs": {
                "oneOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "string"}}]
            },
            "upstream": {"type": "array", "items": {"type": "string"}},
        },
    },
}


INSTRUCTIONS_NOTE = (
    " `instructions` is Markdown (raw HTML off); `{{ inputs.name }}` and"
    " `{{ outputs.step.key }}` put in values the step's `context` shares, as plain text."
)


def _schema(required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required or [],
        "additionalProperties": False,
        "properties": {**COMMON, **extra},
    }


def _needs_someone(config: dict[str, Any]) -> list[str]:
    problems = _reminder(config)
    if not (config.get("assignee") or config.get("assignee_role")):
        problems.append("set assignee (a username) or assignee_role (a group), or both")
    return problems


def _reminder(config: dict[str, Any]) -> list[str]:
    """A reminder comes before a deadline: one needs timeout_hours, and to fit in it."""
    before, timeout = config.get("remind_before_hours"), config.get("timeout_hours")
    if before is None:
        return []
    if timeout is None:
        return ["remind_before_hours needs timeout_hours: a reminder comes before a deadline"]
    if before >= timeout:
        return [
            f"remind_before_hours ({before}) must be less than timeout_hours ({timeout}):"
            " the reminder would come as the task opens"
        ]
    return []


def _check_form(config: dict[str, Any]) -> list[str]:
    """Someone to fill it, and a form_schema Firefly can use (patterns RE2 can run)."""
    problems = _needs_someone(config)
    for path, message in schemas.schema_problems(config["form_schema"]):
        problems.append(f"form_schema.{path}: {message}" if path else f"form_schema: {message}")
    return problems


def _opener(kind: str) -> Any:
    def on_wait(*, txn: RunTxn, step_run: StepRun, step: StepSpec) -> None:
        from approvals.services import task_open

        task_open(txn=txn, step_run=step_run, kind=kind, config=dict(step.config))

    return on_wait


def on_pause(*, txn: RunTxn, step_run: StepRun, reason: str | None) -> None:
    """A python step returned Pause: open an ad-hoc approval carrying its reason."""
    from approvals.services import task_open

    config = dict(txn.spec.by_name[step_run.step_name].config)
    task_open(
        txn=txn, step_run=step_run, kind=HumanTask.Kind.PAUSE, config=config, reason=reason or ""
    )


def on_cancel(*, txn: RunTxn, step_run_ids: list[int]) -> None:
    from approvals.services import tasks_cancel

    tasks_cancel(txn=txn, step_run_ids=step_run_ids)


def register() -> None:
    registry.register(
        registry.StepType(
            name="approval",
            config_schema=_schema(quorum={"type": "integer", "minimum": 1, "maximum": 100}),
            interactive=True,
            on_wait=_opener(HumanTask.Kind.APPROVAL),
            check=_needs_someone,
            description=(
                "People approve (a quorum of N distinct approvers), reject, or roll the run"
                " back; after timeout_hours, on_timeout rejects, approves or escalates."
                + INSTRUCTIONS_NOTE
            ),
            example={
                "assignee_role": "reviewers",
                "quorum": 2,
                "timeout_hours": 48,
                "remind_before_hours": 8,
                "on_timeout": "escalate:managers",
                "instructions": (
                    "Check the release notes of **{{ inputs.version }}** and"
                    " [the build]({{ outputs.build.url }}) before approving."
                ),
                "context": {"inputs": ["version"], "upstream": ["build"]},
            },
        )
    )
    registry.register(
        registry.StepType(
            name="input",
            config_schema=_schema(["form_schema"], form_schema={"type": "object"}),
            interactive=True,
            on_wait=_opener(HumanTask.Kind.INPUT),
            check=_check_form,
            description=(
                "A person fills a form described by a JSON Schema (form_schema); the answers"
                " are the step's output." + INSTRUCTIONS_NOTE
            ),
            example={
                "assignee": "alice",
                "instructions": "How much was spent, and on what?",
                "timeout_hours": 24,
                "form_schema": {
                    "type": "object",
                    "required": ["amount"],
                    "properties": {
                        "amount": {"type": "number", "minimum": 0},
                        "note": {"type": "string", "maxLength": 500},
                    },
                },
            },
        )
    )
    registry.register(
        registry.StepType(
            name="choice",
            config_schema=_schema(
                ["options"],
                options={
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"type": "string"},
                },
            ),
            interactive=True,
            on_wait=_opener(HumanTask.Kind.CHOICE),
            check=_needs_someone,
            description=(
                "A person picks one of `options`; later steps branch on it with `when`."
                + INSTRUCTIONS_NOTE
            ),
            example={
                "assignee_role": "release-managers",
                "options": ["ship", "hold", "cancel"],
                "on_timeout": "reject",
                "timeout_hours": 8,
            },
        )
    )
    hooks.on_pause(on_pause)
    hooks.on_cancel(on_cancel)
