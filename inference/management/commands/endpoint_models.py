from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.engines.base import EngineError
from inference.models import Endpoint
from inference.services import contenders_from_models, endpoint_models_discover


class Command(BaseCommand):
    help = "List an endpoint's models (/v1/models); --add registers them as contenders."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("endpoint")
        parser.add_argument("--add", action="store_true", help="add each as a contender")
        parser.add_argument("--disabled", action="store_true", help="add them disabled")

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint = Endpoint.objects.filter(name=options["endpoint"]).first()
        if endpoint is None:
            raise CommandError(f"No endpoint named {options['endpoint']!r}.")
        try:
            served = endpoint_models_discover(endpoint=endpoint)
        except EngineError as exc:
            raise CommandError(exc.message) from None
        for model in served:
            parent = f" (LoRA on {model.parent})" if model.parent else ""
            self.stdout.write(f"{model.id}{parent}")
        if options["add"]:
            made = contenders_from_models(
                endpoint=endpoint, models=served, enabled=not options["disabled"]
            )
            for contender in made:
                self.stdout.write(f"added contender {contender.name}")
