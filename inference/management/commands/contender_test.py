from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.models import Contender
from inference.services import TRY_PROMPT, contender_try


class Command(BaseCommand):
    help = "Run a short generation on a contender and print the reply and its latency."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--prompt", default=TRY_PROMPT)

    def handle(self, *args: Any, **options: Any) -> None:
        contender = (
            Contender.objects.select_related("endpoint").filter(name=options["name"]).first()
        )
        if contender is None:
            raise CommandError(f"No contender named {options['name']!r}.")
        result = contender_try(contender=contender, prompt=options["prompt"])
        if not result.ok:
            raise CommandError(f"{result.error_code}: {result.error_message}")
        self.stdout.write(result.text.strip())
        self.stdout.write(
            f"-- first token {result.ttft_ms or 0:.0f} ms, {result.tokens} tokens in "
            f"{result.total_ms:.0f} ms, finish: {result.finish_reason}"
        )
