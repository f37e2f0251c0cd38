from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.rag.extract import SUPPORTED
from inference.rag.ingest import IngestOutcome, IngestProgress, knowledge_base_get_or_create
from inference.rag.ingest import paths_ingest as ingest_paths


class Command(BaseCommand):
    help = (
        "Ingest files and folders into a knowledge base (created when missing): "
        f"{', '.join(SUPPORTED)}. Unchanged files are skipped, changed ones replaced."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("knowledge_base", help="its name (a slug), e.g. handbook")
        parser.add_argument("paths", nargs="+", help="files and folders (walked recursively)")
        parser.add_argument("--chunk-size", type=int, help="largest chunk, in characters")
        parser.add_argument("--overlap", type=int, help="characters repeated between chunks")
        parser.add_argument("--description", help="what the knowledge base holds")

    def handle(self, *args: Any, **options: Any) -> None:
        settings = {
            key: options[option]
            for key, option in (
                ("chunk_size", "chunk_size"),
                ("chunk_overlap", "overlap"),
                ("description", "description"),
            )
            if options[option] is not None
        }
        try:
            kb, created = knowledge_base_get_or_create(name=options["knowledge_base"], **settings)
        except ValidationError as exc:
            raise CommandError(_errors(exc)) from None
        if created:
            self.stdout.write(f"created knowledge base {kb.name}")
        outcomes = ingest_paths(knowledge_base=kb, paths=options["paths"], progress=_Shown(self))
        self._summary(outcomes)
        kb.refresh_from_db()
        self.stdout.write(
            f"{kb.name}: {kb.documents.count()} documents, {kb.chunks.count()} chunks, "
            f"revision {kb.revision}"
        )
        if not outcomes:
            raise CommandError(f"no supported files found ({', '.join(SUPPORTED)})")
        if all(o.failed for o in outcomes):
            raise CommandError("every file failed")

    def _summary(self, outcomes: list[IngestOutcome]) -> None:
        counts = Counter(o.status for o in outcomes)
        parts = [f"{counts[s]} {s}" for s in ("added", "replaced", "unchanged", "skipped")]
        self.stdout.write(f"{', '.join(parts)}, {counts['error']} failed")
        for outcome in outcomes:
            if outcome.failed:
                self.stderr.write(f"  failed: {outcome.message}")


class _Shown(IngestProgress):
    """Progress on the terminal: a line per file, embedding counts as they go."""

    def __init__(self, command: BaseCommand) -> None:
        self.out = command.stdout
        self.prefix = ""

    def file_started(self, index: int, total: int, source: str) -> None:
        self.prefix = f"[{index}/{total}] {source}"

    def embedded(self, done: int, total: int) -> None:
        if total > 64:  # a short file is done before a counter would help
            self.out.write(f"{self.prefix}: embedded {done}/{total} chunks", ending="\r")
            self.out.flush()

    def file_done(self, outcome: IngestOutcome) -> None:
        detail = outcome.message if outcome.status in {"error", "skipped"} else ""
        detail = detail or f"{outcome.chunks} chunks"
        self.out.write(f"{self.prefix}: {outcome.status} ({detail})" + " " * 10)


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
