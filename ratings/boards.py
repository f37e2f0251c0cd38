"""What the leaderboard pages read: the latest public snapshot of a board, or,
for a filter no refresh precomputes (a choice of vote sources, a category
with few votes, or before the first refresh), a board computed once into the
cache: single-flight per filter, kept for ARENA_BOARD_CACHE_SECONDS. A page
never saves a snapshot."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from ratings.cache import single_flight
from ratings.models import Snapshot
from ratings.selectors import VoteFilter, snapshot_latest
from ratings.services import CI, leaderboard_compute


class FitCount:
    """Boards computed for the cache in this process: what tests count to show
    that a second request within the TTL fits nothing."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self._value += 1

    @property
    def value(self) -> int:
        return self._value


COMPUTED = FitCount()


@dataclass(frozen=True)
class BoardKey:
    """A board as the page asks for it, normalised so equal boards share a key."""

    category: str = ""
    style_control: bool = False
    ci: CI = "sandwich"
    dedup: bool = True
    sources: tuple[str, ...] | None = None  # None: every source

    @classmethod
    def of(
        cls,
        *,
        category: str,
        style_control: bool,
        ci: str,
        dedup: bool,
        sources: list[str],
        known_sources: list[str],
    ) -> BoardKey:
        """Unknown sources are dropped (they select nothing and would only
        multiply keys); none, or all of them, is every source."""
        chosen = tuple(sorted(set(sources) & set(known_sources)))
        return cls(
            category=category,
            style_control=style_control,
            ci="bootstrap" if ci == "bootstrap" else "sandwich",
            dedup=dedup,
            sources=chosen if chosen and len(chosen) < len(set(known_sources)) else None,
        )

    def cache_key(self, version: str) -> str:
        """Per board_version: a refresh (or, before the first, a vote) starts afresh."""
        fields = json.dumps([asdict(self), version], sort_keys=True)
        return f"arena:ratings:board:{hashlib.sha256(fields.encode()).hexdigest()[:32]}"


@dataclass(frozen=True)
class Board:
    """A board as pages show it: a snapshot's fields, from the database or the cache."""

    rows: list[dict[str, Any]]
    extra: dict[str, Any]
    votes: int
    seconds: float
    created_at: datetime | None

    @classmethod
    def of_snapshot(cls, snapshot: Snapshot) -> Board:
        return cls(snapshot.rows, snapshot.extra, snapshot.votes, snapshot.seconds,
                   snapshot.created_at)  # fmt: skip

    @classmethod
    def of_json(cls, data: dict[str, Any]) -> Board:
        at = data.get("created_at")
        return cls(data["rows"], data["extra"], data["votes"], data["seconds"],
                   datetime.fromisoformat(at) if at else None)  # fmt: skip


def board_get(key: BoardKey, *, version: str) -> Board:
    """The board of `key` (version: selectors.board_version()); raises
    ratings.cache.Computing while another request computes it for longer
    than ARENA_BOARD_WAIT_SECONDS."""
    if key.sources is None:
        snapshot = snapshot_latest(
            category=key.category, style_control=key.style_control, ci=key.ci, dedup=key.dedup
        )
        if snapshot is not None:
            return Board.of_snapshot(snapshot)
    data = single_flight(
        key.cache_key(version),
        lambda: _board_compute(key),
        ttl=settings.ARENA_BOARD_CACHE_SECONDS,
        wait=settings.ARENA_BOARD_WAIT_SECONDS,
    )
    return Board.of_json(data)


def _board_compute(key: BoardKey) -> dict[str, Any]:
    COMPUTED.add()
    snapshot = leaderboard_compute(
        category=key.category,
        style_control=key.style_control,
        ci=key.ci,
        vote_filter=VoteFilter(category=key.category, sources=key.sources, dedup=key.dedup),
        trend=True,
        save=False,
    )
    return {
        "rows": snapshot.rows,
        "extra": snapshot.extra,
        "votes": snapshot.votes,
        "seconds": snapshot.seconds,
        "created_at": timezone.now().isoformat(),
    }
