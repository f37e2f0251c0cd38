from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ratings.exports import ExportFilter, ExportReport, card_path, preferences_export
from ratings.preference import FORMATS, Options


def _date(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not a date: {value!r} (use YYYY-MM-DD or ISO 8601)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Export votes as preference data (TRL, KTO, LMArena) to JSONL, JSONL.gz or Parquet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=FORMATS, required=True)
        parser.add_argument("--out", type=Path, required=True, help=".jsonl, .jsonl.gz or .parquet")
        parser.add_argument("--since", type=_date)
        parser.add_argument("--until", type=_date)
        parser.add_argument("--contender", action="append", default=[])
        parser.add_argument("--category", default="")
        parser.add_argument("--language", default="", help="ISO 639-1 code, e.g. en")
        parser.add_argument("--include-named", action="store_true", help="Also named-mode votes.")
        parser.add_argument("--include-flagged", action="store_true")
        parser.add_argument("--include-ties", action="store_true")
        parser.add_argument("--include-both-bad", action="store_true")
        parser.add_argument("--min-turns", type=int, default=1)
        parser.add_argument("--max-per-prompt", type=int)
        parser.add_argument(
            "--test-share", type=float, default=0.0, help="e.g. 0.1: split by battle"
        )
        parser.add_argument("--system-prompt", action="store_true")
        parser.add_argument(
            "--no-user-text", action="store_true", help="Blank the users' messages."
        )
        parser.add_argument(
            "--chat-template",
            action="store_true",
            help="trl-text: render with the local model's chat template.",
        )
        parser.add_argument("--licence", default=settings.ARENA_EXPORT_LICENCE)

    def handle(self, *args: Any, **opts: Any) -> None:
        if not 0 <= opts["test_share"] < 1:
            raise CommandError("--test-share must be in [0, 1)")
        if opts["min_turns"] < 1:
            raise CommandError("--min-turns must be at least 1")
        render = _chat_template() if opts["chat_template"] else None
        started = time.perf_counter()

        def progress(report: ExportReport) -> None:
            self.stderr.write(
                f"\r{report.votes:,} votes, {sum(report.records.values()):,} records", ending=""
            )
            self.stderr.flush()

        try:
            report = preferences_export(
                fmt=opts["format"],
                path=opts["out"],
                export_filter=ExportFilter(
                    since=opts["since"], until=opts["until"], contenders=tuple(opts["contender"]),
                    category=opts["category"], language=opts["language"],
                    include_named=opts["include_named"], include_flagged=opts["include_flagged"],
                    min_turns=opts["min_turns"], max_per_prompt=opts["max_per_prompt"],
                ),
                options=Options(
                    system_prompt=opts["system_prompt"], include_ties=opts["include_ties"],
                    include_both_bad=opts["include_both_bad"], user_text=not opts["no_user_text"],
                    render=render,
                ),
                test_share=opts["test_share"],
                licence=opts["licence"],
                progress=progress,
            )  # fmt: skip
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write("")
        self.stdout.write(
            f"{sum(report.records.values())} records from {report.votes} votes in "
            f"{time.perf_counter() - started:.1f} s: "
            f"{', '.join(str(p) for p in report.files)} (card: {card_path(opts['out'])})"
        )


def _chat_template() -> Any:
    from transformers import AutoTokenizer

    # debt (issue 15): the local model's folder should come from
    # inference.models, not from the engine; lazy so an export without a
    # chat template never touches the engine's module.
    from inference.engines.local import converted_model_dir

    tokenizer = AutoTokenizer.from_pretrained(converted_model_dir(settings.ARENA_MODEL_CACHE))

    def render(messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return str(
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
        )

    return render
