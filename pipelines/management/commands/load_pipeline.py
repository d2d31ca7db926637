"""`manage.py load_pipeline PATH... [--organization SLUG] [--member-role ROLE]`: load
pipeline spec files (YAML or JSON) into an organization."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from orgs.models import Organization
from pipelines import services
from pipelines.errors import SpecError
from pipelines.models import PipelineRole
from pipelines.spec_text import load_text


def organization_named(slug: str | None) -> Organization:
    """The organization a command acts in: `--organization`, else the default one."""
    if not slug:
        return Organization.objects.default()
    found = Organization.objects.filter(slug=slug).first()
    if found is None:
        raise CommandError(f"No organization {slug!r}.")
    return found


class Command(BaseCommand):
    help = "Load pipeline specs from YAML or JSON files; each file becomes a new version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument(
            "--organization", help="the organization's slug (default: the default organization)"
        )
        parser.add_argument(
            "--member-role",
            choices=PipelineRole.values,
            help="the role every member of the organization gets on these pipelines "
            "(default: none; new pipelines are seen by their grants and admins only)",
        )

    def handle(self, *args: Any, paths: list[Path], **options: Any) -> None:
        organization = organization_named(options.get("organization"))
        # All files or none: a bad file leaves nothing half-loaded.
        with transaction.atomic():
            for path in paths:
                try:
                    version = services.pipeline_create(
                        spec=load_text(path.read_text()),
                        organization=organization,
                        member_role=options.get("member_role"),
                    )
                except OSError as exc:
                    raise CommandError(f"{path}: {exc.strerror}") from exc
                except SpecError as exc:
                    raise CommandError(f"{path}: {exc.message}") from exc
                self.stdout.write(f"{path}: {version.pipeline.name} v{version.number}")
