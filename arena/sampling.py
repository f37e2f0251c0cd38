"""Pair sampling: pure functions, no Django."""

from __future__ import annotations

import random
from collections.abc import Sequence
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
