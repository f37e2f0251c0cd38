from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.models import Endpoint


class Command(BaseCommand):
    help = "Add or update an OpenAI-compatible endpoint (the API key stays in its variable)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("base_url", help="e.g. http://vllm:8000/v1")
        parser.add_argument("--kind", choices=Endpoint.Kind.values, default=Endpoint.Kind.VLLM)
        parser.add_argument("--api-key-env", default="", help="variable that holds the API key")
        parser.add_argument("--max-lora-rank", type=int, default=16)
        parser.add_argument("--disabled", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint = Endpoint.objects.filter(name=options["name"]).first() or Endpoint(
            name=options["name"]
        )
        endpoint.base_url = options["base_url"]
        endpoint.kind = options["kind"]
        endpoint.api_key_env = options["api_key_env"]
        endpoint.max_lora_rank = options["max_lora_rank"]
        endpoint.enabled = not options["disabled"]
        try:
            endpoint.full_clean()
        except ValidationError as exc:
            raise CommandError(_errors(exc)) from None
        created = endpoint.pk is None
        endpoint.save()
        self.stdout.write(f"{'added' if created else 'updated'} endpoint {endpoint.name}")


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
