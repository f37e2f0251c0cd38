"""Writes for the leaderboard: vote annotations, snapshots, outlier flags."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from arena.models import Vote
from inference.models import Contender
from ratings.bt import bt_board
from ratings.categories import conversation_categories
from ratings.dedup import vote_prompt_keys
from ratings.hygiene import identity_leak, identity_pattern, outlier_p_values
from ratings.matrices import expected_win_rate, win_rate_matrices
from ratings.models import FlaggedVoter, Snapshot, VoteCategory, VotePrompt, VoteStyle
from ratings.selectors import OUTCOME, VoteFilter, pair_counts_get, style_rows_get
from ratings.style import STYLE_FEATURES, markdown_counts, style_control_fit, style_features

CI = Literal["sandwich", "bootstrap"]


def vote_annotate(
    *,
    vote: Vote,
    prompts: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    tokens_a: int,
    tokens_b: int,
) -> None:
    """What the leaderboard needs of a fresh vote: categories, the answers'
    style counts, the prompt's de-duplication key, the identity-leak flag and
    the daily-cap flag."""
    if prompts and prompts[0].strip():
        VotePrompt.objects.create(vote=vote, **vote_prompt_keys(vote.pk, prompts[0]))
    VoteCategory.objects.bulk_create(
        [VoteCategory(vote=vote, name=n) for n in sorted(conversation_categories(prompts))]
    )
    ha, la, ba = (sum(x) for x in zip(*(markdown_counts(t) for t in answers_a), strict=True))
    hb, lb, bb = (sum(x) for x in zip(*(markdown_counts(t) for t in answers_b), strict=True))
    VoteStyle.objects.create(
        vote=vote,
        tokens_a=tokens_a,
        tokens_b=tokens_b,
        headers_a=ha,
        headers_b=hb,
        lists_a=la,
        lists_b=lb,
        bold_a=ba,
        bold_b=bb,
    )
    names = Contender.objects.values_list("name", flat=True)
    leak = identity_leak([*answers_a, *answers_b], identity_pattern(names))
    since = timezone.now() - timedelta(days=1)
    earlier = Vote.objects.filter(session_key=vote.session_key, created_at__gte=since).exclude(
        pk=vote.pk
    )
    over_cap = earlier.count() >= settings.ARENA_DAILY_VOTE_CAP
    if leak or over_cap:
        Vote.objects.filter(pk=vote.pk).update(
            identity_leak=bool(leak), leak_evidence=leak[:200], over_cap=over_cap
        )


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


def leaderboard_compute(
    *,
    category: str = "",
    style_control: bool = False,
    ci: CI = "sandwich",
    dedup: bool = True,
    vote_filter: VoteFilter | None = None,
    rounds: int = 100,
    save: bool = True,
) -> Snapshot:
    """Aggregate in SQL, fit, and keep the result as a snapshot."""
    started = time.perf_counter()
    vf = vote_filter or VoteFilter(category=category, dedup=dedup)
    agg = pair_counts_get(vf)
    total = int(agg.table.count.sum())
    extra: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    if agg.table.n >= 2 and total > 0:
        board = bt_board(agg.table, ci=ci, rounds=rounds, min_votes=settings.ARENA_MIN_VOTES)
        rating, lower, upper, rank = board.rating, board.lower, board.upper, board.rank
        if style_control:
            srows = style_rows_get(vf)
            if len(srows.names) >= 2 and srows.a.size:
                sboard = style_control_fit(
                    srows.a,
                    srows.b,
                    srows.outcome,
                    style_features(srows.counts_a, srows.counts_b),
                    len(srows.names),
                    rounds=rounds,
                    min_votes=settings.ARENA_MIN_VOTES,
                )
                by_name = {n: i for i, n in enumerate(srows.names)}
                idx = np.array([by_name.get(n, -1) for n in agg.names])
                has = idx >= 0

                def pick(values: np.ndarray) -> np.ndarray:
                    out = np.full(len(agg.names), np.nan)
                    out[has] = values[idx[has]]
                    return out

                rating, lower, upper = pick(sboard.rating), pick(sboard.lower), pick(sboard.upper)
                from ratings.bt import rank_ub

                rank = rank_ub(lower, upper)
                extra["style"] = {
                    "features": list(STYLE_FEATURES),
                    "coef": [_num(c) for c in sboard.coef],
                    "lower": [_num(c) for c in sboard.coef_lower],
                    "upper": [_num(c) for c in sboard.coef_upper],
                    "votes": int(srows.a.size),
                }
            else:
                extra["style"] = {"features": list(STYLE_FEATURES), "votes": 0}
        observed, battles = win_rate_matrices(agg.table)
        expected = expected_win_rate(rating)
        extra["matrices"] = {
            "names": agg.names,
            "observed": [[_num(x) for x in row] for row in observed],
            "battles": [[int(x) for x in row] for row in battles],
            "expected": [[_num(x) for x in row] for row in expected],
        }
        for i, name in enumerate(agg.names):
            rows.append(
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
            )
        rows.sort(key=lambda r: (r["rating"] is None, -(r["rating"] or 0)))
    snapshot = Snapshot(
        category=category,
        style_control=style_control,
        dedup=vf.dedup,
        ci=ci,
        votes=total,
        seconds=time.perf_counter() - started,
        rows=rows,
        extra=extra,
    )
    if save:
        snapshot.save()
    return snapshot


def snapshots_refresh() -> list[Snapshot]:
    """The boards pages read most: overall, with and without style control,
    and every category with enough votes, all de-duplicated (the marks are
    brought up to date first; a board without de-duplication is computed
    when asked for)."""
    from ratings.selectors import categories_available

    prompts_dedup_mark()
    out = [
        leaderboard_compute(),
        leaderboard_compute(style_control=True),
    ]
    for name, n in categories_available():
        if n >= settings.ARENA_MIN_VOTES:
            out.append(leaderboard_compute(category=name))
    return out


def voters_flag_outliers(*, threshold: float = 1e-4, min_votes: int = 10) -> int:
    """Flag visitors whose votes are very unlikely given everyone else's."""
    rows = list(
        Vote.objects.filter(source="arena")
        .exclude(session_key="")
        .values_list("session_key", "contender_a_id", "contender_b_id", "choice")
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
                    "threshold": threshold,
                    "choices": {str(c): int(k) for c, k in zip(names, counts, strict=True)},
                }
                FlaggedVoter.objects.update_or_create(
                    session_key=key,
                    defaults={"votes": n, "p_value": float(p[i]), "evidence": evidence},
                )
                flagged += 1
    return flagged
