"""Reads for the leaderboard: votes aggregated in SQL, shaped for the math."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Count, Q, QuerySet

from arena.models import Vote
from inference.models import Contender, Engine
from ratings.bt import A_WINS, B_WINS, BOTH_BAD, TIE, PairTable
from ratings.cache import single_flight
from ratings.models import Snapshot, VoteCategory, VotePrompt

OUTCOME: dict[str, int] = {
    Vote.Choice.A: A_WINS,
    Vote.Choice.B: B_WINS,
    Vote.Choice.TIE: TIE,
    Vote.Choice.BOTH_BAD: BOTH_BAD,
}


@dataclass(frozen=True)
class VoteFilter:
    category: str = ""
    sources: tuple[str, ...] | None = None  # None: every source
    include_flagged: bool = False  # over-cap, identity-leak and outlier voters' votes
    include_named: bool = False  # votes cast with the names visible
    dedup: bool = True  # leave out over-frequent prompts' votes beyond their sample

    def queryset(self) -> QuerySet[Vote]:
        votes = Vote.objects.counting(
            include_named=self.include_named,
            include_over_cap=self.include_flagged,
            include_leaks=self.include_flagged,
            include_flagged_voters=self.include_flagged,
        )
        if self.sources is not None:
            votes = votes.filter(source__in=self.sources)
        if self.dedup:
            votes = votes.exclude(
                id__in=VotePrompt.objects.filter(duplicate=True).values("vote_id")
            )
        if self.category:
            votes = votes.filter(
                id__in=VoteCategory.objects.filter(name=self.category).values("vote_id")
            )
        return votes


@dataclass(frozen=True)
class Aggregated:
    names: list[str]
    contender_ids: list[int]
    table: PairTable


Indexed = tuple[list[int], list[str], np.ndarray, np.ndarray, np.ndarray]


def _indexed(rows: list[Any]) -> Indexed:
    """Rows starting (contender a id, contender b id, choice) -> the contenders'
    ids and names in index order, and per-row index and outcome arrays."""
    ids = sorted({r[0] for r in rows} | {r[1] for r in rows})
    index = {cid: i for i, cid in enumerate(ids)}
    by_id = dict(Contender.objects.filter(id__in=ids).values_list("id", "name"))
    n = len(rows)
    a = np.fromiter((index[r[0]] for r in rows), dtype=np.int64, count=n)
    b = np.fromiter((index[r[1]] for r in rows), dtype=np.int64, count=n)
    outcome = np.fromiter((OUTCOME[r[2]] for r in rows), dtype=np.int64, count=n)
    return ids, [by_id[i] for i in ids], a, b, outcome


def pair_counts_get(vote_filter: VoteFilter) -> Aggregated:
    """Outcome counts per (contender a, contender b, choice): one GROUP BY, so
    Python handles pairs, never individual votes."""
    rows = list(
        vote_filter.queryset()
        .order_by()
        .values_list("contender_a_id", "contender_b_id", "choice")
        .annotate(n=Count("id"))
    )
    ids, names, a, b, outcome = _indexed(rows)
    count = np.fromiter((r[3] for r in rows), dtype=np.float64, count=len(rows))
    return Aggregated(names, ids, PairTable(a, b, outcome, count, len(ids)))


@dataclass(frozen=True)
class StyleRows:
    names: list[str]
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    counts_a: np.ndarray  # (votes, 4): tokens, headers, list items, bold spans
    counts_b: np.ndarray


def style_rows_get(vote_filter: VoteFilter) -> StyleRows:
    """Per-vote rows with the answers' style counts (style features are
    continuous, so style control cannot aggregate by pair)."""
    fields = (
        "contender_a_id",
        "contender_b_id",
        "choice",
        "style__tokens_a",
        "style__headers_a",
        "style__lists_a",
        "style__bold_a",
        "style__tokens_b",
        "style__headers_b",
        "style__lists_b",
        "style__bold_b",
    )
    rows = list(vote_filter.queryset().filter(style__isnull=False).order_by().values_list(*fields))
    _, names, a, b, outcome = _indexed(rows)
    data = np.array([r[3:] for r in rows], dtype=np.float64).reshape(len(rows), 8)
    return StyleRows(
        names=names,
        a=a,
        b=b,
        outcome=outcome,
        counts_a=data[:, :4],
        counts_b=data[:, 4:],
    )


def snapshot_latest(
    *, category: str, style_control: bool, ci: str, dedup: bool = True
) -> Snapshot | None:
    """The latest public board of these settings; filtered runs never count."""
    return Snapshot.objects.filter(
        kind=Snapshot.Kind.BOARD, category=category, style_control=style_control, ci=ci, dedup=dedup
    ).first()


def categories_available() -> list[tuple[str, int]]:
    return list(
        VoteCategory.objects.values_list("name")
        .annotate(n=Count("id"))
        .order_by("-n")
        .values_list("name", "n")
    )


def sources_available() -> list[str]:
    return sorted(Vote.objects.order_by().values_list("source", flat=True).distinct())


def board_version() -> str:
    """What cached boards and lists are valid for: the latest refresh, or,
    before the first one, the latest vote (two indexed reads, no scan)."""
    latest = (
        Snapshot.objects.filter(kind=Snapshot.Kind.BOARD)
        .order_by("-id")
        .values_list("id", "created_at")
        .first()
    )
    if latest is None:
        latest = Vote.objects.order_by("-id").values_list("id", "created_at").first()
        if latest is None:
            return "none"
        return f"vote-{latest[0]}-{latest[1].timestamp()}"
    return f"refresh-{latest[0]}-{latest[1].timestamp()}"


def board_lists_read() -> dict[str, Any]:
    """The categories (name, votes; most votes first) and vote sources the page offers."""
    return {
        "categories": [[name, n] for name, n in categories_available()],
        "sources": sources_available(),
    }


def board_lists_key(version: str) -> str:
    return f"arena:ratings:lists:{version}"


def board_lists_get(*, version: str) -> dict[str, Any]:
    """board_lists_read, cached per board_version (a refresh stores the next
    version's): each list is a scan of every vote."""
    lists: dict[str, Any] = single_flight(
        board_lists_key(version),
        board_lists_read,
        ttl=settings.ARENA_BOARD_CACHE_SECONDS,
        wait=settings.ARENA_BOARD_WAIT_SECONDS,
    )
    return lists


@dataclass(frozen=True)
class VoteSequence:
    names: list[str]
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    created_at: list[object]


def vote_sequence_get(vote_filter: VoteFilter) -> VoteSequence:
    """Votes oldest first, as index arrays: what an online Elo trend replays."""
    rows = list(
        vote_filter.queryset()
        .order_by("created_at", "id")
        .values_list("contender_a_id", "contender_b_id", "choice", "created_at")
    )
    _, names, a, b, outcome = _indexed(rows)
    return VoteSequence(
        names=names,
        a=a,
        b=b,
        outcome=outcome,
        created_at=[r[3] for r in rows],
    )


def identities_battling(*, also: tuple[int, ...] = ()) -> list[str]:
    """Names and model ids of the contenders an answer could give away: those
    that can battle (enabled, on a real engine) and `also` (a vote's own two,
    whatever they are now). Never the names known only from imported votes:
    "command-a-03-2025" or "o3-mini" battle nowhere here."""
    rows = Contender.objects.filter(
        Q(enabled=True) & ~Q(engine=Engine.NONE) | Q(id__in=also)
    ).values_list("name", "model")
    return [value for row in rows for value in row if value]
