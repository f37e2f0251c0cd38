from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ratings.vote_import import ImportReport, votes_import


class Command(BaseCommand):
    help = (
        "Import pairwise votes from LMArena's public releases, FastChat's clean_battle JSON "
        "or this project's exports (CSV, JSON, JSONL, Parquet; .gz). Re-importing adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument(
            "--source", help="Label kept on the votes (default: the file name without suffixes)."
        )
        parser.add_argument("--max-errors-shown", type=int, default=20)

    def handle(self, *args: Any, **opts: Any) -> None:
        failed = False
        for path in opts["files"]:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
            source = opts["source"] or path.name.split(".")[0]
            started = time.perf_counter()

            def progress(rows: int, report: ImportReport, name: str = path.name) -> None:
                self.stderr.write(
                    f"\r{name}: {rows:,} rows read, {report.added:,} added, "
                    f"{report.skipped:,} already there, {len(report.errors):,} bad",
                    ending="",
                )
                self.stderr.flush()

            try:
                report = votes_import(path=path, source=source, progress=progress)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            self.stderr.write("")
            for error in report.errors[: opts["max_errors_shown"]]:
                self.stderr.write(f"{path.name}:{error.line}: {error.message}")
            if len(report.errors) > opts["max_errors_shown"]:
                self.stderr.write(f"... and {len(report.errors) - opts['max_errors_shown']} more")
            self.stdout.write(
                f"{path.name}: added {report.added}, skipped {report.skipped} already imported, "
                f"{len(report.errors)} bad rows, source {source!r}, "
                f"{time.perf_counter() - started:.1f} s"
            )
            failed = failed or (report.added == 0 and report.skipped == 0 and bool(report.errors))
        if failed:
            raise CommandError("no row could be imported")
