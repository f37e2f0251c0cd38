from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from inference.health import health_check_all


class Command(BaseCommand):
    help = "Check every endpoint and contender now (what the beat task does) and print it."

    def handle(self, *args: Any, **options: Any) -> None:
        for report in health_check_all():
            state = "ok" if report.healthy else f"DOWN: {report.message}"
            latency = f" ({report.latency_ms:.0f} ms)" if report.latency_ms is not None else ""
            self.stdout.write(f"{report.name}{latency}: {state}")
            for name, (ok, why) in report.contenders.items():
                self.stdout.write(f"  {name}: {'ok' if ok else 'DOWN: ' + why}")
