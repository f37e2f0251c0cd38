from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.management.commands.endpoint_add import _errors
from inference.models import Contender, Endpoint, Engine
from inference.services import contender_check, contender_save


class Command(BaseCommand):
    help = (
        "Add or update a contender: a base model or a LoRA adapter, on the local engine or on "
        "an endpoint. Checked exactly as the admin checks it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--engine", choices=Engine.values, default=Engine.LOCAL)
        parser.add_argument("--endpoint", help="endpoint name (OpenAI-compatible engine)")
        parser.add_argument("--model", default="", help="the base model's name on the endpoint")
        parser.add_argument("--adapter-path", default="", help="LoRA: the adapter's folder")
        parser.add_argument("--adapter-name", default="", help="LoRA: its model name on a server")
        parser.add_argument("--system-prompt", default="")
        parser.add_argument("--params", default="{}", help='JSON, e.g. {"temperature": 0.7}')
        parser.add_argument("--weight", type=float, default=1.0)
        parser.add_argument("--disabled", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        contender = Contender.objects.filter(name=options["name"]).first() or Contender(
            name=options["name"]
        )
        endpoint = None
        if options["endpoint"]:
            endpoint = Endpoint.objects.filter(name=options["endpoint"]).first()
            if endpoint is None:
                raise CommandError(f"No endpoint named {options['endpoint']!r}.")
        try:
            params = json.loads(options["params"])
        except ValueError as exc:
            raise CommandError(f"--params is not JSON: {exc}") from None
        lora = bool(options["adapter_path"] or options["adapter_name"])
        contender.engine = options["engine"]
        contender.endpoint = endpoint
        contender.kind = Contender.Kind.LORA if lora else Contender.Kind.BASE
        contender.model = options["model"]
        contender.adapter_path = options["adapter_path"]
        contender.adapter_name = options["adapter_name"]
        contender.system_prompt = options["system_prompt"]
        contender.params = params
        contender.weight = options["weight"]
        contender.enabled = not options["disabled"]
        try:
            contender.full_clean()
        except ValidationError as exc:
            raise CommandError(_errors(exc)) from None
        check = contender_check(contender)
        if check.errors:
            raise CommandError("; ".join(f"{f}: {' '.join(m)}" for f, m in check.errors.items()))
        created = contender.pk is None
        contender_save(contender=contender, check=check)
        for warning in check.warnings:
            self.stderr.write(f"warning: {warning}")
        self.stdout.write(f"{'added' if created else 'updated'} contender {contender.name}")
