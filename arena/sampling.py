"""Pair sampling: pure functions, no Django.

Two rules: weighted (each pair in proportion to the product of the admin
weights) and active (the weighted rule times how much one more vote on the
pair would shrink its uncertainty, after the LMArena paper's active sampling),
so intervals shrink with fewer votes and new contenders get their first
battles quickly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations


def pair_sample(weights: Sequence[float], rng: random.Random) -> tuple[int, int]:
    """Pick two distinct indices, each pair with probability proportional to
    the product of its weights, then put them on random sides.

    Raises ValueError when fewer than two indices have a positive weight.
    """
    live = [i for i, w in enumerate(weights) if w > 0]
    if len(live) < 2:
        raise ValueError("need at least two positive weights")
    pairs = list(combinations(live, 2))
    (i, j) = rng.choices(pairs, weights=[weights[i] * weights[j] for i, j in pairs])[0]
    return (i, j) if rng.random() < 0.5 else (j, i)


# --- active sampling -------------------------------------------------------------


@dataclass(frozen=True)
class PairRecord:
    """What the votes say about one pair so far: how many votes, and the
    first index's score in them (a win 1, a tie or both-bad 0.5)."""

    votes: int = 0
    score_first: float = 0.0


def pair_gain(record: PairRecord) -> float:
    """How much one more vote shrinks this pair's uncertainty.

    The standard error of a pair's outcome after n votes is sqrt(v / n), with
    v = p(1 - p) the outcome variance (p smoothed towards 1/2, so an unseen or
    evenly matched pair has the most to learn). One more vote removes
    sqrt(v / (n + 1)) - sqrt(v / (n + 2)) of it (n shifted by one so an
    unseen pair has a finite gain): the rule of the LMArena paper's active
    sampling, per pair.
    """
    n = record.votes
    p = (record.score_first + 1.0) / (n + 2.0)
    v = p * (1.0 - p)
    return math.sqrt(v) * (1.0 / math.sqrt(n + 1.0) - 1.0 / math.sqrt(n + 2.0))


def pair_probabilities(
    weights: Sequence[float],
    records: Mapping[tuple[int, int], PairRecord],
    explore: float = 0.2,
) -> dict[tuple[int, int], float]:
    """Each unordered pair's chance of being drawn (keys i < j).

    Mixes active sampling (admin weights times the pair's gain) with a share
    `explore` of plain weighted sampling, so no pair starves: new contenders
    (every pair of theirs unseen) are drawn far more often until their pairs
    catch up, and pairs that are far apart or well measured less often.
    """
    live = [i for i, w in enumerate(weights) if w > 0]
    if len(live) < 2:
        raise ValueError("need at least two positive weights")
    pairs = list(combinations(live, 2))
    base = [weights[i] * weights[j] for i, j in pairs]
    gains = [
        b * pair_gain(records.get((i, j), PairRecord()))
        for b, (i, j) in zip(base, pairs, strict=True)
    ]
    total_base, total_gain = sum(base), sum(gains)
    return {
        pair: (1.0 - explore) * g / total_gain + explore * b / total_base
        for pair, g, b in zip(pairs, gains, base, strict=True)
    }


def pair_sample_active(
    weights: Sequence[float],
    records: Mapping[tuple[int, int], PairRecord],
    rng: random.Random,
    explore: float = 0.2,
) -> tuple[int, int]:
    """Pick a pair by `pair_probabilities`, then put it on random sides."""
    chances = pair_probabilities(weights, records, explore)
    (i, j) = rng.choices(list(chances), weights=list(chances.values()))[0]
    return (i, j) if rng.random() < 0.5 else (j, i)
