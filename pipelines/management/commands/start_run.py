"""`manage.py start_run NAME --inputs '{...}' [--wait]`: start a run, optionally follow it."""

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines import selectors, services
from pipelines.errors import FireflyError
from pipelines.management.commands.load_pipeline import organization_named
from pipelines.models import Run


class Command(BaseCommand):
    help = (
        "Start a run of a pipeline; with --wait, show its progress and exit 1 unless it succeeds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("pipeline")
        parser.add_argument("--inputs", default="{}", help="the run's inputs as a JSON object")
        parser.add_argument(
            "--pipeline-version",
            type=int,
            dest="pipeline_version",
            help="a version number (default: the latest)",
        )
        parser.add_argument(
            "--organization", help="the organization's slug (default: the default organization)"
        )
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            inputs = json.loads(options["inputs"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--inputs is not valid JSON: {exc}") from exc
        try:
            run = services.run_start(
                pipeline=options["pipeline"],
                inputs=inputs,
                version=options["pipeline_version"],
                organization=organization_named(options.get("organization")),
            )
        except FireflyError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"run {run.pk} started ({options['pipeline']})")
        if not options["wait"]:
            return
        seen: set[tuple[str, int, int, str]] = set()
        deadline = time.monotonic() + options["timeout"]
        while True:
            run.refresh_from_db()
            for step in selectors.run_steps(run):
                key = (step.step_name, step.generation, step.attempt, step.status)
                if key not in seen and step.status != "pending":
                    seen.add(key)
                    self.stdout.write(
                        f"  {step.step_name:<24} {step.status:<10} attempt {step.attempt}"
                    )
            if run.is_finished:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"run {run.pk} still {run.status} after {options['timeout']:g}s")
            time.sleep(0.2)
        self.stdout.write(f"run {run.pk} {run.status}" + (f": {run.error}" if run.error else ""))
        if run.status != Run.Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} ended {run.status}")
        self.stdout.write(json.dumps(run.output, indent=2))
