import random
from collections import Counter

import pytest

from arena.sampling import pair_sample


def test_it_never_pairs_a_contender_with_itself() -> None:
    rng = random.Random(1)
    for _ in range(500):
        a, b = pair_sample([1.0, 1.0, 1.0], rng)
        assert a != b


def test_pairs_follow_the_product_of_weights_and_sides_are_random() -> None:
    rng = random.Random(7)
    n = 20_000
    pairs = Counter(frozenset(pair_sample([1.0, 2.0, 3.0], rng)) for _ in range(n))
    total = 1 * 2 + 1 * 3 + 2 * 3
    assert pairs[frozenset({0, 1})] / n == pytest.approx(2 / total, abs=0.015)
    assert pairs[frozenset({0, 2})] / n == pytest.approx(3 / total, abs=0.015)
    assert pairs[frozenset({1, 2})] / n == pytest.approx(6 / total, abs=0.015)
    firsts = Counter(pair_sample([1.0, 1.0], rng)[0] for _ in range(4000))
    assert firsts[0] / 4000 == pytest.approx(0.5, abs=0.04)


def test_a_zero_weight_is_never_sampled() -> None:
    rng = random.Random(3)
    seen = {i for _ in range(300) for i in pair_sample([1.0, 0.0, 1.0], rng)}
    assert seen == {0, 2}


def test_fewer_than_two_live_contenders_is_an_error() -> None:
    with pytest.raises(ValueError, match="two"):
        pair_sample([1.0, 0.0], random.Random(0))
