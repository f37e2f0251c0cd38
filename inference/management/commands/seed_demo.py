from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.models import Contender, Engine, KnowledgeBase
from inference.rag.ingest import document_ingest, knowledge_base_get_or_create

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
DOCS_KB = "arena-docs"
# "plain" against "answers from the docs": the same model and parameters.
RAG_DEMO: dict[str, Any] = {
    "name": "smollm2-docs",
    "system_prompt": "",
    "params": {"temperature": 0.7, "top_p": 0.9},
}


def docs_paths() -> list[Path]:
    """The project's own documentation: the README and docs/."""
    base = Path(settings.BASE_DIR)
    return [p for p in [base / "README.md", *sorted((base / "docs").glob("*.md"))] if p.is_file()]


class Command(BaseCommand):
    help = (
        "Register demo contenders on the local SmolLM2 model, a knowledge base of the "
        "project's documentation and a RAG variant that answers from it (idempotent)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--no-docs", action="store_true", help="Skip the documentation knowledge base."
        )

    def handle(self, *args: object, **options: Any) -> None:
        for spec in DEMO:
            self._contender(spec)
        if not options["no_docs"]:
            kb = self._docs_kb()
            if kb is not None:
                self._contender(RAG_DEMO, knowledge_base=kb)

    def _contender(self, spec: dict[str, Any], **extra: Any) -> None:
        _, created = Contender.objects.get_or_create(
            name=spec["name"],
            defaults={
                "engine": Engine.LOCAL,
                "system_prompt": spec["system_prompt"],
                "params": spec["params"],
                **extra,
            },
        )
        self.stdout.write(f"{'added' if created else 'kept'} {spec['name']}")

    def _docs_kb(self) -> KnowledgeBase | None:
        paths = docs_paths()
        if not paths:
            self.stdout.write("no documentation found beside the project: no docs knowledge base")
            return None
        kb, _ = knowledge_base_get_or_create(
            name=DOCS_KB, description="The arena's own documentation (README and docs/)."
        )
        base = Path(settings.BASE_DIR)
        for path in paths:
            outcome = document_ingest(
                knowledge_base=kb, source=str(path.relative_to(base)), data=path.read_bytes()
            )
            self.stdout.write(f"{DOCS_KB}: {outcome}")
        return kb
