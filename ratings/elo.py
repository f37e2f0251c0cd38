"""Online Elo over votes in time order: the live trend line, not the leaderboard.

The update is FastChat's ``compute_elo``: after each vote both sides move by
k * (score - expected), zero-sum, where a tie or a both-bad vote scores one half. Online Elo
depends on vote order and never settles, which is why the leaderboard uses Bradley-Terry
(``ratings.bt``) instead; this module only draws how ratings moved over time.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ratings.bt import A_WINS, B_WINS, check_votes

Floats = NDArray[np.float64]


def elo_online(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    n: int,
    *,
    k: float = 4.0,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
    exclude_ties: bool = False,
) -> Floats:
    """Ratings of the n contenders after all votes (per-vote arrays, oldest first)."""
    history = elo_history(
        a,
        b,
        outcome,
        n,
        checkpoints=[len(np.asarray(a))],
        k=k,
        scale=scale,
        base=base,
        init_rating=init_rating,
        exclude_ties=exclude_ties,
    )
    return history[0]


def elo_history(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    n: int,
    *,
    checkpoints: ArrayLike,
    k: float = 4.0,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
    exclude_ties: bool = False,
) -> Floats:
    """Ratings after the first c votes for each c in checkpoints, shape (len(checkpoints), n).

    Checkpoints count votes in the input (skipped ties included) and must be non-decreasing
    within [0, number of votes]. exclude_ties skips ties and both-bad votes.
    """
    a_, b_, o_ = check_votes(a, b, outcome, n)
    marks = np.asarray(checkpoints, dtype=np.int64).reshape(-1)
    if marks.size and (marks.min() < 0 or marks.max() > a_.size or np.any(np.diff(marks) < 0)):
        raise ValueError(f"checkpoints must be non-decreasing within [0, {a_.size}]")
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(base) and base > 1):
        raise ValueError("scale must be positive and base greater than 1")

    alpha = math.log(base) / scale
    scores = np.where(o_ == A_WINS, 1.0, np.where(o_ == B_WINS, 0.0, 0.5))
    skip = (a_ == b_) | ((o_ > B_WINS) if exclude_ties else False)
    ratings = [float(init_rating)] * n
    out = np.empty((marks.size, n))
    # A plain loop on Python floats: each update depends on the previous one, and scalar
    # numpy indexing would be several times slower.
    done = 0
    for row, mark in enumerate(marks.tolist()):
        for i, j, s, skipped in zip(
            a_[done:mark].tolist(),
            b_[done:mark].tolist(),
            scores[done:mark].tolist(),
            skip[done:mark].tolist(),
            strict=True,
        ):
            if skipped:
                continue
            expected = 1.0 / (1.0 + math.exp(alpha * (ratings[j] - ratings[i])))
            delta = k * (s - expected)
            ratings[i] += delta
            ratings[j] -= delta
        done = mark
        out[row] = ratings
    return out
