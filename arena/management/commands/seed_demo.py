from typing import Any

from django.core.management.base import BaseCommand

from inference.models import Contender, Engine

DEMO: list[dict[str, Any]] = [
    {
        "name": "smollm2-plain",
        "system_prompt": "",
        "params": {"temperature": 0.7, "top_p": 0.9},
    },
    {
        "name": "smollm2-concise",
        "system_prompt": "You are a concise assistant. Answer in at most three short sentences.",
        "params": {"temperature": 0.3, "top_p": 0.9},
    },
    {
        "name": "smollm2-creative",
        "system_prompt": "You are a playful, imaginative assistant who likes vivid examples.",
        "params": {"temperature": 1.0, "top_p": 0.95},
    },
]


class Command(BaseCommand):
    help = "Register demo contenders on the local SmolLM2 model (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        for spec in DEMO:
            _, created = Contender.objects.get_or_create(
                name=spec["name"],
                defaults={
                    "engine": Engine.LOCAL,
                    "system_prompt": spec["system_prompt"],
                    "params": spec["params"],
                },
            )
            self.stdout.write(f"{'added' if created else 'kept'} {spec['name']}")
