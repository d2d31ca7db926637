"""`manage.py run_status RUN_ID`: print a run, its steps and its handoffs."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines import selectors
from pipelines.models import HandoffEnvelope, Run


class Command(BaseCommand):
    help = "Print a run, its steps (latest attempt each), its handoffs and its output."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", type=int)

    def handle(self, *args: Any, run_id: int, **options: Any) -> None:
        try:
            run = Run.objects.select_related("pipeline_version__pipeline").get(pk=run_id)
        except Run.DoesNotExist:
            raise CommandError(f"No run {run_id}.") from None
        version = run.pipeline_version
        self.stdout.write(f"run {run.pk}: {version.pipeline.name} v{version.number}  {run.status}")
        self.stdout.write(
            f"  generation {run.generation}, created {run.created_at:%Y-%m-%d %H:%M:%S}"
        )
        if run.is_finishing:
            self.stdout.write(f"  finishing: on_finish runs (the steps {run.finishing})")
        if run.error:
            self.stdout.write(f"  error: {run.error}")
        if run.parent_id:
            self.stdout.write(f"  handed off by run {run.parent_id}")
        consumed = selectors.consumed_by_step(run)
        for step in selectors.current_steps(run):
            latency = f"{step.latency_ms} ms" if step.latency_ms is not None else ""
            self.stdout.write(
                f"  {step.step_name:<24} {step.status:<10} gen {step.generation} "
                f"attempt {step.attempt} {latency}"
                + (f"  {step.error.splitlines()[-1]}" if step.error else "")
            )
            read = consumed.get(step.step_name)
            if read:
                self.stdout.write(f"    read inputs sha256 {read.get('run_inputs_sha256', '')}")
                for upstream in read.get("upstream", []):
                    self.stdout.write(
                        f"    read {upstream['step']} (step run {upstream['step_run']}, "
                        f"gen {upstream['generation']}, attempt {upstream['attempt']}) "
                        f"outputs sha256 {upstream['outputs_sha256']}"
                    )
        envelopes = HandoffEnvelope.objects.filter(origin_run=run).select_related("child_run")
        for envelope in envelopes.order_by("id"):
            origin = f"step {envelope.origin_step}" if envelope.origin_step else "on_finish"
            self.stdout.write(
                f"  handoff {envelope.pk} from {origin} to {envelope.target_pipeline}: "
                f"run {envelope.child_run_id}, {envelope.status}"
                + (f" ({json.dumps(envelope.decision)})" if envelope.decision else "")
            )
        if run.disposition is not None:
            self.stdout.write(f"  disposition: {json.dumps(run.disposition)}")
        if run.output is not None:
            self.stdout.write(json.dumps(run.output, indent=2))
