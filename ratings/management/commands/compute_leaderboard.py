from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ratings.selectors import VoteFilter
from ratings.services import leaderboard_compute, snapshots_refresh


class Command(BaseCommand):
    help = (
        "Recompute the leaderboard now and keep it as a snapshot. A run with --source or "
        "--include-flagged is kept as a filtered snapshot: the pages never show it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the board as JSON.")
        parser.add_argument("--ci", choices=["sandwich", "bootstrap"], default="sandwich")
        parser.add_argument("--category", default="")
        parser.add_argument("--style-control", action="store_true")
        parser.add_argument("--source", action="append", help="Only votes from this source.")
        parser.add_argument("--include-flagged", action="store_true")
        parser.add_argument("--all", action="store_true", help="Refresh every snapshot pages read.")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["all"]:
            snapshots = snapshots_refresh()
            if snapshots is None:
                self.stderr.write("Another refresh is running: nothing done.")
                return
            for snap in snapshots:
                self.stdout.write(f"{snap}: {len(snap.rows)} contenders, {snap.seconds:.3f} s")
            return
        vote_filter = VoteFilter(
            category=opts["category"],
            sources=tuple(opts["source"]) if opts["source"] else None,
            include_flagged=opts["include_flagged"],
        )
        snap = leaderboard_compute(
            category=opts["category"],
            style_control=opts["style_control"],
            ci=opts["ci"],
            vote_filter=vote_filter,
            trend=True,
        )
        if opts["json"]:
            self.stdout.write(json.dumps(snap.rows, indent=1))
            return
        self.stdout.write(f"{snap.votes} votes, {len(snap.rows)} contenders, {snap.seconds:.3f} s")
        for row in snap.rows:
            lo, hi = row["lower"], row["upper"]
            self.stdout.write(
                f"{row['rank']:>4}  {row['name']:<45} {row['rating'] or float('nan'):8.1f} "
                f"[{lo or float('nan'):7.1f}, {hi or float('nan'):7.1f}]  {row['votes']:>7}"
                f"{'  provisional' if row['provisional'] else ''}"
            )
