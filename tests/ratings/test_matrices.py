"""Pairwise matrices for the heatmaps."""

from __future__ import annotations

import numpy as np
import pytest

from ratings.bt import A_WINS, B_WINS, BOTH_BAD, TIE, PairTable, bt_fit
from ratings.matrices import expected_win_rate, win_rate_matrices


@pytest.fixture
def three_way_table() -> PairTable:
    # 0 v 1: 0 wins 3 (2 on the left, 1 on the right), 1 wins 1, one tie.
    # 1 v 2: 2 wins once on the right, one both-bad. 0 and 2 never met.
    a = [0, 0, 1, 0, 1, 1, 1, 2]
    b = [1, 1, 0, 1, 0, 2, 2, 2]
    outcome = [A_WINS, A_WINS, B_WINS, B_WINS, TIE, B_WINS, BOTH_BAD, A_WINS]
    return PairTable.from_votes(a, b, outcome, 3)


def test_observed_win_rates_count_decisive_votes_from_either_side(three_way_table):
    observed, _ = win_rate_matrices(three_way_table)
    assert observed[0, 1] == pytest.approx(3 / 4)
    assert observed[1, 0] == pytest.approx(1 / 4)
    assert observed[2, 1] == 1.0
    assert observed[1, 2] == 0.0
    assert np.isnan(observed[0, 2]) and np.isnan(observed[2, 0])
    assert np.all(np.isnan(np.diag(observed)))


def test_battle_counts_include_ties_and_are_symmetric(three_way_table):
    _, battles = win_rate_matrices(three_way_table)
    assert battles.tolist() == [[0, 5, 0], [5, 0, 2], [0, 2, 0]]


def test_expected_win_rate_follows_the_rating_gap():
    expected = expected_win_rate(np.array([1400.0, 1000.0, np.nan]))
    assert expected[0, 1] == pytest.approx(10 / 11)
    assert expected[1, 0] == pytest.approx(1 / 11)
    assert expected[0, 0] == 0.5
    assert np.all(np.isnan(expected[2]))


def test_expected_matches_observed_on_plenty_of_simulated_votes():
    rng = np.random.default_rng(3)
    strengths = np.array([-0.5, 0.0, 0.4, 0.9])
    a = rng.integers(0, 4, 200_000)
    b = (a + rng.integers(1, 4, 200_000)) % 4
    a_wins = rng.random(a.size) < 1 / (1 + np.exp(strengths[b] - strengths[a]))
    table = PairTable.from_votes(a, b, np.where(a_wins, A_WINS, B_WINS), 4)
    observed, _ = win_rate_matrices(table)
    expected = expected_win_rate(bt_fit(table))
    off_diagonal = ~np.eye(4, dtype=bool)
    assert np.abs(observed - expected)[off_diagonal].max() < 0.01
