"""`manage.py run_status RUN_ID`: print a run and its steps."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines import selectors
from pipelines.models import Run


class Command(BaseCommand):
    help = "Print a run, its steps (latest attempt each) and its output."

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
        if run.error:
            self.stdout.write(f"  error: {run.error}")
        for step in selectors.current_steps(run):
            latency = f"{step.latency_ms} ms" if step.latency_ms is not None else ""
            self.stdout.write(
                f"  {step.step_name:<24} {step.status:<10} gen {step.generation} "
                f"attempt {step.attempt} {latency}"
                + (f"  {step.error.splitlines()[-1]}" if step.error else "")
            )
        if run.output is not None:
            self.stdout.write(json.dumps(run.output, indent=2))
