"""`manage.py load_pipeline PATH...`: load pipeline spec files (YAML or JSON)."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from pipelines import services
from pipelines.errors import SpecError
from pipelines.spec import load_text


class Command(BaseCommand):
    help = "Load pipeline specs from YAML or JSON files; each file becomes a new version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path)

    def handle(self, *args: Any, paths: list[Path], **options: Any) -> None:
        # All files or none: a bad file leaves nothing half-loaded.
        with transaction.atomic():
            for path in paths:
                try:
                    version = services.pipeline_create(spec=load_text(path.read_text()))
                except OSError as exc:
                    raise CommandError(f"{path}: {exc.strerror}") from exc
                except SpecError as exc:
                    raise CommandError(f"{path}: {exc.message}") from exc
                self.stdout.write(f"{path}: {version.pipeline.name} v{version.number}")
