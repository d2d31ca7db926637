"""`manage.py apply_retention`: erase and purge old runs now, as beat does every hour."""

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand

from pipelines import services


class Command(BaseCommand):
    help = (
        "Apply retention now: erase the data of runs past their outputs_days, then purge "
        "runs past their runs_days (FIREFLY_RETENTION_* settings, a spec's retention); "
        "prints what it did as one JSON object."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = services.retention_apply()
        self.stdout.write(json.dumps(asdict(report)))
