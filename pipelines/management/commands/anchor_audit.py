"""`manage.py anchor_audit`: give new entries their global positions and write an anchor
now (beat does it every FIREFLY_ANCHOR_INTERVAL_S)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pipelines import anchors


class Command(BaseCommand):
    help = (
        "Sequence the audit entries not yet in the global sequence and write a signed anchor "
        "to the anchor file and database (FIREFLY_ANCHOR_FILE, FIREFLY_ANCHOR_DATABASE_URL)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            anchor = anchors.anchor_audit()
        except anchors.AnchorStoreError as exc:
            raise CommandError(f"anchor not written: {exc}") from exc
        if anchor is None:
            self.stdout.write("nothing new to anchor")
        else:
            self.stdout.write(
                f"anchor {anchor['number']}: position {anchor['position']}, "
                f"{len(anchor['chains'])} chains"
            )
