from __future__ import annotations

import json
import textwrap
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.models import KnowledgeBase
from inference.rag.retrieval import passages_retrieve


class Command(BaseCommand):
    help = "Show the passages a question retrieves from a knowledge base."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("knowledge_base")
        parser.add_argument("question")
        parser.add_argument("--k", type=int, help="passages (default: the knowledge base's top_k)")
        parser.add_argument("--threshold", type=float, help="least cosine similarity to keep")
        parser.add_argument(
            "--mode", choices=("hybrid", "dense", "lexical"), default="hybrid", help="ranking"
        )
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        kb = KnowledgeBase.objects.filter(name=options["knowledge_base"]).first()
        if kb is None:
            known = ", ".join(KnowledgeBase.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"no knowledge base {options['knowledge_base']!r} (known: {known})")
        if options["k"] is not None and options["k"] < 1:
            raise CommandError("--k must be at least 1")
        started = time.perf_counter()
        passages = passages_retrieve(
            knowledge_base=kb,
            query=options["question"],
            k=options["k"],
            threshold=options["threshold"],
            mode=options["mode"],
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        if options["json"]:
            payload = {
                "knowledge_base": kb.name,
                "question": options["question"],
                "passages": [p.as_json() for p in passages],
            }
            self.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2))
            return
        if not passages:
            self.stdout.write("no passages (an empty knowledge base, or all below the threshold)")
        for number, p in enumerate(passages, 1):
            where = f"{p.document} \u203a {p.section}" if p.section else p.document
            self.stdout.write(
                f"[{number}] {where}  ({p.source}; score {p.score:.4f}, "
                f"similarity {p.similarity:.3f})"
            )
            self.stdout.write(textwrap.indent(p.text, "    "))
        self.stdout.write(f"({len(passages)} passages in {elapsed_ms:.0f} ms)")
