"""Each step visit's audit entry names what it read: the run's inputs and its upstream steps'
outputs, by reference and SHA-256, not copies."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pytest
from django.core.management import call_command

from pipelines import services
from pipelines.models import AuditEntry, Run, StepRun
from pipelines.services.handlers import sha256_of
from tests.approvals.conftest import drive

pytestmark = pytest.mark.django_db

READS = {"callable": "tests.pipelines.callables.upstream_names"}
STEPS = [
    {"name": "a", "type": "python", "config": READS},
    {"name": "b", "type": "python", "after": ["a"], "config": READS},
    {"name": "c", "type": "python", "after": ["a", "b"], "config": READS},
    # Never asks for its upstream's outputs: it read none.
    {"name": "d", "type": "noop", "after": ["c"]},
]
# Large enough that a copy per step would show in the entries' size.
INPUTS = {"document": "x" * 50_000, "n": 3, "tags": ["é", "ü"]}


def digest(value: Any) -> str:
    """Computed here, independently: canonical JSON (no floats in these values)."""
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def finished(make_pipeline: Any) -> Run:
    run = drive(services.run_start(pipeline=make_pipeline(STEPS), inputs=INPUTS))
    assert run.status == Run.Status.SUCCEEDED
    return run


def visit(run: Run, step: str) -> AuditEntry:
    return AuditEntry.objects.get(run=run, step_name=step, event="step.succeeded")


def test_a_step_visit_records_its_inputs_and_upstream_outputs_by_reference_and_hash(
    make_pipeline,
):
    run = finished(make_pipeline)
    steps = {s.step_name: s for s in StepRun.objects.filter(run=run)}
    stored = Run.objects.get(pk=run.pk).inputs

    def ref(name: str) -> dict[str, Any]:
        step = steps[name]
        return {
            "step": name,
            "step_run": step.pk,
            "generation": 1,
            "attempt": 1,
            "outputs_sha256": digest(step.outputs),
        }

    inputs_hash = digest(stored)
    assert visit(run, "a").inputs == {"run_inputs_sha256": inputs_hash, "upstream": []}
    assert visit(run, "b").inputs == {"run_inputs_sha256": inputs_hash, "upstream": [ref("a")]}
    assert visit(run, "c").inputs == {
        "run_inputs_sha256": inputs_hash,
        "upstream": [ref("a"), ref("b")],
    }
    assert visit(run, "d").inputs == {"run_inputs_sha256": inputs_hash, "upstream": []}
    # Linear in the steps: no entry but the run's own holds a copy of the inputs.
    entries = AuditEntry.objects.filter(run=run).order_by("seq")
    copies = [e.event for e in entries if "xxxxx" in json.dumps(e.inputs)]
    assert copies == ["run.created"]
    assert max(len(json.dumps(visit(run, s).inputs)) for s in "abcd") < 1000
    out = io.StringIO()
    call_command("verify_audit", "--run", str(run.pk), stdout=out)
    assert "audit trail intact" in out.getvalue()


def test_the_digest_is_the_same_for_values_before_and_after_the_database_round_trip(
    make_pipeline,
):
    inputs = {"big": 1e16, "negative_zero": -0.0, "huge": 1.5e300, "small": 1e-7}
    run = drive(services.run_start(pipeline=make_pipeline(STEPS), inputs=inputs))
    stored = Run.objects.get(pk=run.pk).inputs
    assert visit(run, "a").inputs["run_inputs_sha256"] == sha256_of(stored) == sha256_of(inputs)


def test_run_status_and_the_run_page_show_what_each_step_read(make_pipeline, client, users):
    run = finished(make_pipeline)
    c = visit(run, "c").inputs
    a_ref, b_ref = c["upstream"]

    out = io.StringIO()
    call_command("run_status", str(run.pk), stdout=out)
    shown = out.getvalue()
    assert f"read inputs sha256 {c['run_inputs_sha256']}" in shown
    assert (
        f"read b (step run {b_ref['step_run']}, gen 1, attempt 1) "
        f"outputs sha256 {b_ref['outputs_sha256']}"
    ) in shown

    client.force_login(users["starter"])
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert f'title="sha256 {c["run_inputs_sha256"]}"' in page
    assert f'title="sha256 {a_ref["outputs_sha256"]}"' in page
    assert f"a (step run {a_ref['step_run']}, gen 1)" in page
    assert "xxxxx" not in page
