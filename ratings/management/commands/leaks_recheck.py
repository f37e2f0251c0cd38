from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ratings.services import votes_leaks_recheck


class Command(BaseCommand):
    help = (
        "Check every vote flagged as an identity leak against the current rule (only "
        "contenders that can battle, never ordinary words) and let those it clears count again."
    )

    def handle(self, *args: Any, **opts: Any) -> None:
        cleared = votes_leaks_recheck()
        self.stdout.write(f"{cleared} votes no longer flagged as identity leaks")
