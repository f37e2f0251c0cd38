"""Pairwise matrices for the heatmaps: observed and expected win rates, battle counts."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ratings.bt import A_WINS, B_WINS, PairTable

Floats = NDArray[np.float64]


def win_rate_matrices(table: PairTable) -> tuple[Floats, Floats]:
    """Observed win rate and battle count between every two contenders, each (n, n).

    observed[i, j] is the share of the decisive votes between i and j that i won (ties and
    both-bad left out, as FastChat's win-fraction heatmap does); NaN where they never had a
    decisive vote, and on the diagonal. battles[i, j] counts every vote between i and j,
    ties included; it is symmetric with a zero diagonal.
    """
    n = table.n
    keep = table.a != table.b
    a, b, out, count = table.a[keep], table.b[keep], table.outcome[keep], table.count[keep]
    winner = np.where(out == A_WINS, a, b)
    loser = np.where(out == A_WINS, b, a)
    decisive = (out == A_WINS) | (out == B_WINS)
    wins = np.bincount(
        winner[decisive] * n + loser[decisive], weights=count[decisive], minlength=n * n
    ).reshape(n, n)
    battles = np.asarray(np.bincount(a * n + b, weights=count, minlength=n * n), np.float64)
    battles = battles.reshape(n, n)
    battles = battles + battles.T
    played = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.where(played > 0, wins / played, np.nan)
    return observed, battles


def expected_win_rate(ratings: ArrayLike, *, scale: float = 400.0, base: float = 10.0) -> Floats:
    """Probability that i beats j under the ratings: 1 / (1 + base ** ((R_j - R_i) / scale)).

    The diagonal is 0.5; rows and columns of NaN ratings (unrated contenders) are NaN.
    """
    r = np.asarray(ratings, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"ratings must be 1-D, got shape {r.shape}")
    diff = (r[None, :] - r[:, None]) * (math.log(base) / scale)
    return 1.0 / (1.0 + np.exp(diff))
