"""Online Elo: the live trend line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ratings.bt import A_WINS, B_WINS, BOTH_BAD, TIE
from ratings.elo import elo_history, elo_online


def fastchat_compute_elo(a, b, outcome, k=4.0, scale=400.0, base=10.0, init=1000.0):
    """FastChat's compute_elo loop, written out independently over Python dicts."""
    rating: dict[int, float] = {}
    for i, j, o in zip(a.tolist(), b.tolist(), outcome.tolist(), strict=True):
        ra, rb = rating.get(i, init), rating.get(j, init)
        ea = 1 / (1 + base ** ((rb - ra) / scale))
        eb = 1 / (1 + base ** ((ra - rb) / scale))
        sa = 1.0 if o == A_WINS else 0.0 if o == B_WINS else 0.5
        rating[i] = ra + k * (sa - ea)
        rating[j] = rating.get(j, init) + k * (1 - sa - eb)
    return rating


def test_the_winner_goes_up_and_the_loser_down_by_the_same_amount():
    ratings = elo_online([0], [1], [A_WINS], 3)
    assert ratings[0] == pytest.approx(1002.0)  # k * (1 - 0.5)
    assert ratings[1] == pytest.approx(998.0)
    assert ratings[2] == 1000.0


def test_a_side_b_win_moves_b_up():
    ratings = elo_online([0], [1], [B_WINS], 2)
    assert ratings[1] > 1000 > ratings[0]


def test_ratings_stay_zero_sum_over_many_votes():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, 5000)
    b = (a + rng.integers(1, 10, 5000)) % 10
    outcome = rng.integers(0, 4, 5000)
    ratings = elo_online(a, b, outcome, 10, k=16.0)
    assert ratings.sum() == pytest.approx(10 * 1000.0)
    assert ratings.std() > 1


def test_a_tie_between_equals_changes_nothing_and_pulls_unequals_together():
    assert elo_online([0], [1], [TIE], 2).tolist() == [1000.0, 1000.0]
    after = elo_online([0, 0, 0], [1, 1, 1], [A_WINS, A_WINS, BOTH_BAD], 2)
    before = elo_online([0, 0], [1, 1], [A_WINS, A_WINS], 2)
    assert after[0] < before[0]
    assert after[1] > before[1]


def test_excluding_ties_skips_them():
    ratings = elo_online([0, 0], [1, 1], [A_WINS, TIE], 2, exclude_ties=True)
    np.testing.assert_allclose(ratings, elo_online([0], [1], [A_WINS], 2))


def test_online_elo_matches_fastchats_loop():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, 3000)
    b = (a + rng.integers(1, 6, 3000)) % 6
    outcome = rng.integers(0, 4, 3000)
    expected = fastchat_compute_elo(a, b, outcome)
    ratings = elo_online(a, b, outcome, 6)
    for i, value in expected.items():
        assert ratings[i] == pytest.approx(value, abs=1e-9)


def test_history_records_the_ratings_after_each_checkpoint():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, 400)
    b = (a + rng.integers(1, 4, 400)) % 4
    outcome = rng.integers(0, 2, 400)
    history = elo_history(a, b, outcome, 4, checkpoints=[0, 100, 100, 400])
    assert history.shape == (4, 4)
    assert history[0].tolist() == [1000.0] * 4
    np.testing.assert_array_equal(history[1], history[2])
    np.testing.assert_allclose(history[1], elo_online(a[:100], b[:100], outcome[:100], 4))
    np.testing.assert_allclose(history[3], elo_online(a, b, outcome, 4))


def test_history_refuses_checkpoints_out_of_order():
    with pytest.raises(ValueError, match="checkpoints"):
        elo_history([0, 1], [1, 0], [A_WINS, A_WINS], 2, checkpoints=[2, 1])


def test_a_larger_scale_means_smaller_expected_gaps():
    steep = elo_online([0] * 50, [1] * 50, [A_WINS] * 50, 2, scale=200.0)
    flat = elo_online([0] * 50, [1] * 50, [A_WINS] * 50, 2, scale=800.0)
    assert steep[0] - steep[1] < flat[0] - flat[1]
    assert math.isclose(steep.sum(), 2000.0)
