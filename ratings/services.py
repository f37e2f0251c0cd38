"""Writes for the leaderboard: snapshots, outlier flags, the leak and de-duplication marks
(a fresh vote's annotations: ratings.annotation)."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber

from arena.models import Answer, Vote
from ratings.annotation import votes_annotate_pending
from ratings.bt import Board, bt_board, rank_ub
from ratings.cache import lock_held, store
from ratings.elo import elo_history
from ratings.hygiene import identity_leak, identity_pattern, outlier_p_values
from ratings.matrices import expected_win_rate, win_rate_matrices
from ratings.models import FlaggedVoter, Snapshot, VotePrompt
from ratings.selectors import (
    OUTCOME,
    Aggregated,
    VoteFilter,
    board_lists_key,
    board_lists_read,
    board_version,
    identities_battling,
    pair_counts_get,
    style_rows_get,
    vote_sequence_get,
)
from ratings.style import STYLE_FEATURES, style_control_fit, style_features

CI = Literal["sandwich", "bootstrap"]


def votes_leaks_recheck() -> int:
    """Clear the identity-leak flag of votes the current rule no longer
    flags: those an older rule flagged for an ordinary word ("command",
    "amazon") taken from names known only from imported votes. Returns how
    many votes count again; votes still flagged keep their flag."""
    flagged = list(
        Vote.objects.filter(identity_leak=True, battle__isnull=False).values_list(
            "id", "battle_id", "contender_a_id", "contender_b_id"
        )
    )
    texts: dict[Any, list[str]] = {}
    answers = Answer.objects.filter(
        turn__battle_id__in=[f[1] for f in flagged], superseded=False
    ).values_list("turn__battle_id", "text")
    for battle_id, text in answers.iterator(chunk_size=2000):
        texts.setdefault(battle_id, []).append(text)
    patterns: dict[tuple[int, int], re.Pattern[str]] = {}
    cleared = []
    for vote_id, battle_id, a, b in flagged:
        if (a, b) not in patterns:
            patterns[(a, b)] = identity_pattern(identities_battling(also=(a, b)))
        if not identity_leak(texts.get(battle_id, []), patterns[(a, b)]):
            cleared.append(vote_id)
    return Vote.objects.filter(id__in=cleared).update(identity_leak=False, leak_evidence="")


def prompts_dedup_mark(*, threshold: int | None = None) -> int:
    """Mark the votes of over-frequent prompts beyond each prompt's sample of
    `threshold` votes as duplicates (and unmark the rest): a few UPDATEs in
    SQL, never a loop over votes. Returns how many votes are marked."""
    limit = settings.ARENA_DEDUP_THRESHOLD if threshold is None else threshold
    frequent = (
        VotePrompt.objects.order_by()
        .values("prompt_hash")
        .annotate(n=Count("id"))
        .filter(n__gt=limit)
        .values("prompt_hash")
    )
    ranked = VotePrompt.objects.filter(prompt_hash__in=frequent).annotate(
        position=Window(
            RowNumber(), partition_by=[F("prompt_hash")], order_by=F("sample_key").asc()
        )
    )
    beyond = ranked.filter(position__gt=limit).values("id")
    with transaction.atomic():
        VotePrompt.objects.filter(duplicate=True).exclude(id__in=beyond).update(duplicate=False)
        VotePrompt.objects.filter(duplicate=False, id__in=beyond).update(duplicate=True)
        return VotePrompt.objects.filter(duplicate=True).count()


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


# The boards a refresh precomputes for the overall board and every category with
# enough votes: every combination of the page's style, ci and dedup settings.
CIS: tuple[CI, ...] = ("sandwich", "bootstrap")
TREND_POINTS = 60
# One refresh at a time (Redis when configured, else this process); a refresh
# renews the lock after each category, so a dead worker frees it within this long.
REFRESH_LOCK = "arena:ratings:refresh"
REFRESH_LOCK_SECONDS = 300.0
# Votes recorded since the last refresh began (ratings.tasks counts them).
VOTES_SINCE_REFRESH = "arena:ratings:votes-since-refresh"


class _BoardVotes:
    """The votes of one filter, read once and shared by the boards built on them
    (every style and ci setting of a refresh uses one aggregation)."""

    def __init__(self, vote_filter: VoteFilter, rounds: int) -> None:
        self.filter = vote_filter
        self.rounds = rounds
        self.read_seconds = 0.0
        self._agg: Aggregated | None = None
        self._plain: dict[str, Board] = {}
        self._style: dict[str, Any] | None = None
        self._trend: dict[str, Any] | None = None

    def agg(self) -> Aggregated:
        if self._agg is None:
            started = time.perf_counter()
            self._agg = pair_counts_get(self.filter)
            self.read_seconds += time.perf_counter() - started
        return self._agg

    def rateable(self) -> bool:
        """Some vote between two different contenders (ties carry half a win each)."""
        table = self.agg().table
        return bool(np.any(table.count[table.a != table.b] > 0))

    def plain(self, ci: CI) -> Board:
        if ci not in self._plain:
            self._plain[ci] = bt_board(
                self.agg().table, ci=ci, rounds=self.rounds, min_votes=settings.ARENA_MIN_VOTES
            )
        return self._plain[ci]

    def style(self) -> dict[str, Any]:
        """Style control (its intervals are bootstrap whatever the ci): ratings
        in the aggregation's contender order, and the coefficients."""
        if self._style is None:
            self._style = self._style_fit()
        return self._style

    def _style_fit(self) -> dict[str, Any]:
        srows = style_rows_get(self.filter)
        if len(srows.names) < 2 or not np.any(srows.a != srows.b):
            return {"coef": {"features": list(STYLE_FEATURES), "votes": 0}}
        sboard = style_control_fit(
            srows.a,
            srows.b,
            srows.outcome,
            style_features(srows.counts_a, srows.counts_b),
            len(srows.names),
            rounds=self.rounds,
            min_votes=settings.ARENA_MIN_VOTES,
        )
        names = self.agg().names
        by_name = {n: i for i, n in enumerate(srows.names)}
        idx = np.array([by_name.get(n, -1) for n in names], dtype=np.int64)
        has = idx >= 0

        def pick(values: np.ndarray) -> np.ndarray:
            out = np.full(len(names), np.nan)
            out[has] = values[idx[has]]
            return out

        lower, upper = pick(sboard.lower), pick(sboard.upper)
        return {
            "rating": pick(sboard.rating),
            "lower": lower,
            "upper": upper,
            "rank": rank_ub(lower, upper),
            "coef": {
                "features": list(STYLE_FEATURES),
                "coef": [_num(c) for c in sboard.coef],
                "lower": [_num(c) for c in sboard.coef_lower],
                "upper": [_num(c) for c in sboard.coef_upper],
                "votes": int(srows.a.size),
            },
        }

    def trend(self) -> dict[str, Any]:
        if self._trend is None:
            self._trend = self._trend_replay(TREND_POINTS)
        return self._trend

    def _trend_replay(self, points: int) -> dict[str, Any]:
        """Online Elo of every contender after each of `points` slices of the
        votes, oldest first: what the contender page draws."""
        seq = vote_sequence_get(self.filter)
        if seq.a.size < 2:
            return {}
        marks = np.unique(np.linspace(1, seq.a.size, min(points, seq.a.size)).astype(np.int64))
        history = elo_history(seq.a, seq.b, seq.outcome, len(seq.names), checkpoints=marks)
        return {
            "labels": [f"{seq.created_at[m - 1]:%Y-%m-%d}" for m in marks.tolist()],
            "ratings": {
                name: [_num(round(float(x), 1)) for x in history[:, i]]
                for i, name in enumerate(seq.names)
            },
        }


def _board_build(
    votes: _BoardVotes, *, style_control: bool, ci: CI
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (best first) and extras (style coefficients, matrices) of one board."""
    extra: dict[str, Any] = {}
    if not votes.rateable():
        if style_control:
            extra["style"] = {"features": list(STYLE_FEATURES), "votes": 0}
        return [], extra
    agg = votes.agg()
    board = votes.plain(ci)
    rating, lower, upper, rank = board.rating, board.lower, board.upper, board.rank
    if style_control:
        styled = votes.style()
        extra["style"] = styled["coef"]
        if "rating" in styled:
            rating, lower, upper = styled["rating"], styled["lower"], styled["upper"]
            rank = styled["rank"]
    observed, battles = win_rate_matrices(agg.table)
    expected = expected_win_rate(rating)
    extra["matrices"] = {
        "names": agg.names,
        "observed": [[_num(x) for x in row] for row in observed],
        "battles": [[int(x) for x in row] for row in battles],
        "expected": [[_num(x) for x in row] for row in expected],
    }
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "rating": _num(rating[i]),
            "lower": _num(lower[i]),
            "upper": _num(upper[i]),
            "rank": int(rank[i]),
            "votes": int(board.votes[i]),
            "wins": int(board.wins[i]),
            "losses": int(board.losses[i]),
            "ties": int(board.ties[i]),
            "win_rate": _num(board.win_rate[i]),
            "provisional": bool(board.provisional[i]),
        }
        for i, name in enumerate(agg.names)
    ]
    rows.sort(key=lambda r: (r["rating"] is None, -(r["rating"] or 0)))
    return rows, extra


def _snapshot(
    votes: _BoardVotes,
    *,
    category: str,
    style_control: bool,
    ci: CI,
    trend: dict[str, Any] | None,
) -> Snapshot:
    started = time.perf_counter()
    rows, extra = _board_build(votes, style_control=style_control, ci=ci)
    if trend is not None:
        extra["trend"] = trend
    vf = votes.filter
    public = vf == VoteFilter(category=category, dedup=vf.dedup)
    return Snapshot(
        kind=Snapshot.Kind.BOARD if public else Snapshot.Kind.FILTERED,
        filter={} if public else json.loads(json.dumps(asdict(vf))),
        category=category,
        style_control=style_control,
        dedup=vf.dedup,
        ci=ci,
        votes=int(votes.agg().table.count.sum()),
        seconds=votes.read_seconds + time.perf_counter() - started,
        rows=rows,
        extra=extra,
    )


def leaderboard_compute(
    *,
    category: str = "",
    style_control: bool = False,
    ci: CI = "sandwich",
    dedup: bool = True,
    vote_filter: VoteFilter | None = None,
    rounds: int = 100,
    trend: bool = False,
    save: bool = True,
) -> Snapshot:
    """Aggregate in SQL, fit, and keep the result as a snapshot: the public
    board when the filter is the page's own (category, dedup), else a
    "filtered" snapshot that pages never show. trend adds the online Elo
    trend the contender page draws (one more read, of every vote)."""
    votes = _BoardVotes(vote_filter or VoteFilter(category=category, dedup=dedup), rounds)
    snapshot = _snapshot(
        votes,
        category=category,
        style_control=style_control,
        ci=ci,
        trend=votes.trend() if trend else None,
    )
    if save:
        snapshot.save()
    return snapshot


def snapshots_refresh() -> list[Snapshot] | None:
    """Every board the page offers for the overall board and each category with
    enough votes (style control on and off, both intervals, de-duplication on
    and off), each with its Elo trend; the de-duplication marks are brought up
    to date first and old snapshots pruned last. Returns None, doing nothing,
    while another refresh runs."""
    with lock_held(REFRESH_LOCK, ttl=REFRESH_LOCK_SECONDS) as held:
        if held is None:
            return None
        store().set(VOTES_SINCE_REFRESH, 0, ttl=None)
        votes_annotate_pending()  # votes whose task is late count as flagged ones do
        duplicates = prompts_dedup_mark()
        lists = board_lists_read()
        enough = [name for name, n in lists["categories"] if n >= settings.ARENA_MIN_VOTES]
        out: list[Snapshot] = []
        for category in ["", *enough]:
            out += _category_refresh(category, duplicates=duplicates)
            held.renew()
        # All at once: readers switch from one refresh's boards to the next's in
        # one step, and the cache's version (the latest board) moves once.
        with transaction.atomic():
            Snapshot.objects.bulk_create(out)
        ttl = settings.ARENA_BOARD_CACHE_SECONDS
        store().set(board_lists_key(board_version()), lists, ttl=ttl)
        snapshots_prune()
        return out


def _category_refresh(category: str, *, duplicates: int) -> list[Snapshot]:
    """The eight boards of one category (or the overall board), unsaved."""
    out: list[Snapshot] = []
    deduped = _BoardVotes(VoteFilter(category=category, dedup=True), rounds=100)
    # No vote marked duplicate: both settings count the same votes, read them once.
    everything = VoteFilter(category=category, dedup=False)
    undeduped = _BoardVotes(everything, rounds=100) if duplicates else deduped
    for dedup in (True, False):
        votes = deduped if dedup else undeduped
        trend = votes.trend()
        for style_control in (False, True):
            for ci in CIS:
                snapshot = _snapshot(
                    votes, category=category, style_control=style_control, ci=ci, trend=trend
                )
                snapshot.dedup = dedup
                out.append(snapshot)
    return out


# What a snapshot kept only for history drops: the page of an old board needs
# its rows, not its heat map or trend (85 KB of a real 53-model board's 90 KB).
_HISTORY_DROPS = ("matrices", "trend")


def snapshots_prune(*, keep: int | None = None) -> int:
    """Keep the latest `keep` snapshots of each board (ARENA_SNAPSHOTS_KEEP)
    and the last of every day, for history (its rows and style coefficients
    only); delete the rest. Returns how many were deleted."""
    keep = settings.ARENA_SNAPSHOTS_KEEP if keep is None else keep
    rows = Snapshot.objects.order_by("-created_at", "-id").values_list(
        "id", "kind", "filter", "category", "style_control", "ci", "dedup", "created_at"
    )
    seen: dict[tuple[Any, ...], int] = {}
    days: set[tuple[Any, ...]] = set()
    drop: list[int] = []
    history: list[int] = []
    for pk, kind, vote_filter, *board, created_at in rows:
        key = (kind, json.dumps(vote_filter, sort_keys=True), *board)
        day = (*key, created_at.date())
        newer = seen.get(key, 0)
        seen[key] = newer + 1
        if newer < keep:
            days.add(day)
        elif day not in days:
            days.add(day)
            history.append(pk)
        else:
            drop.append(pk)
    for start in range(0, len(drop), 500):
        Snapshot.objects.filter(id__in=drop[start : start + 500]).delete()
    _snapshots_slim(history)
    return len(drop)


def _snapshots_slim(ids: list[int]) -> None:
    for start in range(0, len(ids), 500):
        heavy = Snapshot.objects.filter(
            id__in=ids[start : start + 500], extra__has_any_keys=list(_HISTORY_DROPS)
        ).only("id", "extra")
        slim = []
        for snapshot in heavy:
            snapshot.extra = {k: v for k, v in snapshot.extra.items() if k not in _HISTORY_DROPS}
            slim.append(snapshot)
        Snapshot.objects.bulk_update(slim, ["extra"])


# FlaggedVoter.session_key of a network flagged as a whole: this prefix and
# its Vote.ip_key; a visitor flagged alone is stored under its Vote.session_key.
IP_FLAG_PREFIX = "ip:"


def voters_flag_outliers(*, threshold: float = 1e-4, min_votes: int = 10) -> int:
    """Flag voters whose votes are very unlikely given everyone else's: each
    visitor, and each network (an IP, an IPv6 /64) as one voter, so visitors
    who each vote a little from one address are caught together."""
    flagged = _outliers_flag(
        field="session_key", prefix="", kind="visitor", threshold=threshold, min_votes=min_votes
    )
    return flagged + _outliers_flag(
        field="ip_key", prefix=IP_FLAG_PREFIX, kind="ip", threshold=threshold, min_votes=min_votes
    )


def _outliers_flag(*, field: str, prefix: str, kind: str, threshold: float, min_votes: int) -> int:
    rows = list(
        Vote.objects.filter(source="arena")
        .exclude(**{field: ""})
        .values_list(field, "contender_a_id", "contender_b_id", "choice")
    )
    if not rows:
        return 0
    voters = sorted({r[0] for r in rows})
    voter_index = {v: i for i, v in enumerate(voters)}
    # Orient every pair as (low id, high id) so a swap of sides is the same pair.
    pair_ids: dict[tuple[int, int], int] = {}
    voter, pair, outcome = [], [], []
    swap = {0: 1, 1: 0, 2: 2, 3: 3}
    for key, a, b, choice in rows:
        o = OUTCOME[choice]
        if a > b:
            a, b, o = b, a, swap[o]
        pair.append(pair_ids.setdefault((a, b), len(pair_ids)))
        voter.append(voter_index[key])
        outcome.append(o)
    p = outlier_p_values(
        np.array(voter), np.array(pair), np.array(outcome), len(voters), min_votes=min_votes
    )
    flagged = 0
    voter_arr, choices = np.array(voter), np.array([r[3] for r in rows])
    with transaction.atomic():
        for i, key in enumerate(voters):
            if math.isfinite(p[i]) and p[i] < threshold:
                mine = voter_arr == i
                n = int(mine.sum())
                names, counts = np.unique(choices[mine], return_counts=True)
                evidence = {
                    "test": "fisher",
                    "group": kind,
                    "threshold": threshold,
                    "choices": {str(c): int(k) for c, k in zip(names, counts, strict=True)},
                }
                FlaggedVoter.objects.update_or_create(
                    session_key=f"{prefix}{key}",
                    defaults={"votes": n, "p_value": float(p[i]), "evidence": evidence},
                )
                flagged += 1
    return flagged
