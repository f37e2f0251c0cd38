"""Bradley-Terry ratings: real LMArena votes, simulations from known strengths, edge cases."""

from __future__ import annotations

import csv
import gzip
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from ratings.bt import (
    A_WINS,
    B_WINS,
    BOTH_BAD,
    TIE,
    PairTable,
    bt_board,
    bt_bootstrap,
    bt_fit,
    rank_ub,
)

VOTES_CSV = Path(__file__).resolve().parents[2] / "data" / "arena_hp140k_votes.csv.gz"
POINTS = 400 / math.log(10)  # rating points per natural-log unit of strength
WINNER_CODES = {"model_a": A_WINS, "model_b": B_WINS, "tie": TIE, "both_bad": BOTH_BAD}


@cache
def real_votes() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The 135,634 LMArena votes as per-vote arrays (a, b, outcome) and the model count."""
    names: dict[str, int] = {}
    a, b, outcome = [], [], []
    with gzip.open(VOTES_CSV, "rt", newline="") as f:
        for row in csv.DictReader(f):
            a.append(names.setdefault(row["model_a"], len(names)))
            b.append(names.setdefault(row["model_b"], len(names)))
            outcome.append(WINNER_CODES[row["winner"]])
    return np.array(a), np.array(b), np.array(outcome), len(names)


@pytest.fixture(scope="module")
def arena() -> PairTable:
    return PairTable.from_votes(*real_votes())


def per_vote_reference(a, b, outcome, n):
    """FastChat's compute_mle_elo without sklearn: one logistic row per vote, a tie as one
    half row won by each side, fitted by L-BFGS on the mean log-loss."""
    keep = a != b
    a, b, outcome = a[keep], b[keep], outcome[keep]
    drawn = outcome >= TIE
    rows_a = np.r_[a, a]
    rows_b = np.r_[b, b]
    won = np.r_[(outcome == A_WINS) | drawn, outcome == A_WINS].astype(float)
    size = won.size

    def loss(theta):
        d = theta[rows_a] - theta[rows_b]
        value = -(won * log_expit(d) + (1 - won) * log_expit(-d)).sum() / size
        resid = expit(d) - won
        grad = (np.bincount(rows_a, resid, n) - np.bincount(rows_b, resid, n)) / size
        return value, grad

    result = minimize(
        loss,
        np.zeros(n),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 20000, "maxcor": 30},
    )
    theta = result.x - result.x.mean()
    return 1000 + POINTS * theta


def votes_of(simulated: Any) -> tuple[Any, Any, Any]:
    a, b, outcome = simulated
    return a, b, outcome


def simulate(strengths, votes, rng, tie_rate=0.0):
    """Votes between random pairs from known strengths. Ties come with probability tie_rate
    and the decisive odds are adjusted so that the expected score (a tie worth half) is
    exactly the Bradley-Terry probability: what the half-a-win convention estimates."""
    n = strengths.size
    a = rng.integers(0, n, votes)
    b = (a + rng.integers(1, n, votes)) % n
    p = expit(strengths[a] - strengths[b])
    assert np.all((tie_rate / 2 <= p) & (p <= 1 - tie_rate / 2)), "strengths too far apart"
    tie = rng.random(votes) < tie_rate
    a_wins = rng.random(votes) < (p - tie_rate / 2) / (1 - tie_rate)
    outcome = np.where(tie, TIE, np.where(a_wins, A_WINS, B_WINS))
    return a, b, outcome


def test_the_real_fit_sits_at_the_likelihood_maximum(arena):
    a, b, outcome, n = real_votes()
    theta = (bt_fit(arena) - 1000) / POINTS
    keep = a != b
    a, b, outcome = a[keep], b[keep], outcome[keep]
    score = np.where(outcome == A_WINS, 1.0, np.where(outcome == B_WINS, 0.0, 0.5))
    resid = score - expit(theta[a] - theta[b])
    grad = np.bincount(a, resid, n) - np.bincount(b, resid, n)
    votes = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    assert np.abs(grad / votes).max() < 1e-9


def test_the_real_ratings_centre_on_1000(arena):
    ratings = bt_fit(arena)
    assert ratings.mean() == pytest.approx(1000, abs=1e-9)
    assert ratings.max() - ratings.min() > 100


def test_the_real_board_agrees_with_a_per_vote_logistic_regression(arena):
    reference = per_vote_reference(*real_votes())
    assert np.abs(bt_board(arena).rating - reference).max() < 0.01


def test_decisive_votes_agree_with_choix(arena):
    choix = pytest.importorskip("choix")
    a, b, outcome, _ = real_votes()
    board = bt_board(arena, exclude_ties=True)
    decisive = (outcome <= B_WINS) & (a != b)
    rated = ~np.isnan(board.rating)
    local = np.cumsum(rated) - 1
    winners = np.where(outcome == A_WINS, a, b)[decisive]
    losers = np.where(outcome == A_WINS, b, a)[decisive]
    pairs = np.column_stack([local[winners], local[losers]]).tolist()
    params = choix.ilsr_pairwise(int(rated.sum()), pairs, tol=1e-12, max_iter=1000)
    expected = 1000 + POINTS * (params - params.mean())
    assert not board.regularised
    assert np.abs(board.rating[rated] - expected).max() < 0.01


def test_ratings_and_intervals_ignore_vote_order_and_sides():
    a, b, outcome, n = real_votes()
    rng = np.random.default_rng(7)
    order = rng.permutation(a.size)
    a2, b2, out2 = a[order], b[order], outcome[order]
    swap = rng.random(a.size) < 0.5
    a2, b2 = np.where(swap, b2, a2), np.where(swap, a2, b2)
    out2 = np.where(swap & (out2 <= B_WINS), 1 - out2, out2)
    original = PairTable.from_votes(a, b, outcome, n)
    shuffled = PairTable.from_votes(a2, b2, out2, n)
    for ci in ("sandwich", "bootstrap"):
        first = bt_board(original, ci=ci, rounds=20)
        second = bt_board(shuffled, ci=ci, rounds=20)
        np.testing.assert_allclose(second.rating, first.rating, rtol=0, atol=1e-8)
        np.testing.assert_allclose(second.lower, first.lower, rtol=0, atol=1e-6)
        np.testing.assert_allclose(second.upper, first.upper, rtol=0, atol=1e-6)


def test_bootstrap_and_sandwich_intervals_agree_on_real_votes(arena):
    sandwich = bt_board(arena, ci="sandwich")
    bootstrap = bt_board(arena, ci="bootstrap", rounds=400, seed=1)
    settled = ~sandwich.provisional
    assert settled.sum() > 40
    ratio = (bootstrap.upper - bootstrap.lower)[settled] / (sandwich.upper - sandwich.lower)[
        settled
    ]
    assert 0.92 < np.median(ratio) < 1.08
    assert ratio.min() > 0.8
    assert ratio.max() < 1.25


def test_an_anchored_contender_gets_its_score_and_a_zero_width_interval(arena):
    free = bt_board(arena)
    anchored = bt_board(arena, anchor=(3, 1114.0))
    assert anchored.rating[3] == pytest.approx(1114.0)
    assert anchored.upper[3] - anchored.lower[3] == pytest.approx(0.0, abs=1e-9)
    shift = anchored.rating - free.rating
    np.testing.assert_allclose(shift, shift[0], atol=1e-9)
    boot = bt_bootstrap(arena, rounds=5, anchor=(3, 1114.0))
    np.testing.assert_allclose(boot[:, 3], 1114.0)


def test_true_strengths_are_recovered_from_many_votes():
    rng = np.random.default_rng(11)
    strengths = np.linspace(-0.8, 0.8, 8)
    table = PairTable.from_votes(*votes_of(simulate(strengths, 400_000, rng, tie_rate=0.3)), 8)
    board = bt_board(table)
    truth = 1000 + POINTS * (strengths - strengths.mean())
    standard_error = (board.upper - board.lower) / (2 * 1.959964)
    assert np.abs(board.rating - truth).max() < 3.0
    assert np.abs((board.rating - truth) / standard_error).max() < 4


def test_sandwich_intervals_cover_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    strengths = np.array([-0.8, -0.3, 0.0, 0.2, 0.5, 0.9])
    truth = 1000 + POINTS * (strengths - strengths.mean())
    covered = []
    for _ in range(200):
        table = PairTable.from_votes(*votes_of(simulate(strengths, 1500, rng, tie_rate=0.3)), 6)
        board = bt_board(table, ci="sandwich")
        covered.append((board.lower <= truth) & (truth <= board.upper))
    assert 0.925 < np.mean(covered) < 0.975


def test_bootstrap_intervals_cover_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(99)
    strengths = np.array([-0.6, -0.2, 0.1, 0.3, 0.7])
    truth = 1000 + POINTS * (strengths - strengths.mean())
    covered = []
    for seed in range(80):
        table = PairTable.from_votes(*votes_of(simulate(strengths, 2000, rng, tie_rate=0.2)), 5)
        board = bt_board(table, ci="bootstrap", rounds=100, seed=seed)
        covered.append((board.lower <= truth) & (truth <= board.upper))
    assert 0.9 < np.mean(covered) < 0.99


def test_rank_counts_contenders_whose_lower_bound_clears_the_upper_bound():
    lower = [10.0, 15.0, 30.0, 0.0, 20.0]
    upper = [20.0, 25.0, 40.0, 5.0, 22.0]
    # 20 is not above 20: touching intervals do not separate contenders.
    assert rank_ub(lower, upper).tolist() == [2, 2, 1, 5, 2]


def test_rank_puts_contenders_without_an_interval_last():
    ranks = rank_ub([10.0, np.nan, 0.0], [20.0, np.nan, 5.0])
    assert ranks.tolist() == [1, 3, 2]


def test_rank_rejects_an_interval_upside_down():
    with pytest.raises(ValueError, match="lower bound"):
        rank_ub([5.0], [1.0])


def test_from_votes_counts_each_pair_and_outcome():
    table = PairTable.from_votes(
        [0, 0, 1, 0, 2], [1, 1, 0, 1, 0], [A_WINS, A_WINS, TIE, B_WINS, BOTH_BAD], 3
    )
    rows = {
        (a, b, o): c
        for a, b, o, c in zip(table.a, table.b, table.outcome, table.count, strict=True)
    }
    assert rows == {
        (0, 1, A_WINS): 2.0,
        (0, 1, B_WINS): 1.0,
        (1, 0, TIE): 1.0,
        (2, 0, BOTH_BAD): 1.0,
    }


def test_a_table_with_an_unknown_contender_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        PairTable(np.array([0]), np.array([2]), np.array([A_WINS]), np.array([1.0]), 2)


def test_a_table_with_a_negative_count_is_refused():
    with pytest.raises(ValueError, match="non-negative"):
        PairTable(np.array([0]), np.array([1]), np.array([A_WINS]), np.array([-1.0]), 2)


def test_an_empty_table_raises_a_clear_error():
    empty = PairTable.from_votes(
        np.array([], dtype=int), np.array([], dtype=int), np.array([], dtype=int), 4
    )
    with pytest.raises(ValueError, match="no votes"):
        bt_fit(empty)


def test_only_ties_with_exclude_ties_raises_a_clear_error():
    table = PairTable.from_votes([0, 1], [1, 2], [TIE, BOTH_BAD], 3)
    with pytest.raises(ValueError, match="win credit"):
        bt_board(table, exclude_ties=True)


def small_league(rng):
    """Four contenders who all beat and lose to each other now and then."""
    strengths = np.array([-0.5, 0.0, 0.3, 0.6])
    return simulate(strengths, 2000, rng, tie_rate=0.2)


def test_a_contender_with_one_vote_gets_a_finite_provisional_rating():
    a, b, outcome = small_league(np.random.default_rng(5))
    table = PairTable.from_votes(np.r_[a, 4], np.r_[b, 0], np.r_[outcome, A_WINS], 5)
    board = bt_board(table)
    assert board.regularised  # one win and no loss: no maximum without the prior
    assert np.all(np.isfinite(board.rating))
    assert board.votes[4] == 1
    assert board.provisional[4]
    assert not board.provisional[:4].any()
    assert board.rating[4] > board.rating[0]
    # The prior is weak: the settled contenders barely move.
    plain = bt_fit(PairTable.from_votes(a, b, outcome, 4))
    shifted = board.rating[:4] - plain
    assert np.abs(shifted - shifted.mean()).max() < 0.5


def test_a_contender_that_never_lost_is_rated_first_not_infinite():
    a, b, outcome = small_league(np.random.default_rng(6))
    champion = np.full(40, 4)
    rivals = np.arange(40) % 4
    table = PairTable.from_votes(
        np.r_[a, champion], np.r_[b, rivals], np.r_[outcome, np.full(40, A_WINS)], 5
    )
    board = bt_board(table)
    assert board.regularised
    assert board.order()[0] == 4
    assert board.rating[4] < 3000
    assert np.isfinite(board.upper[4])
    assert bt_board(table, ci="bootstrap", rounds=30).rank[4] == 1


def test_a_contender_that_never_won_is_rated_last_not_minus_infinite():
    a, b, outcome = small_league(np.random.default_rng(8))
    table = PairTable.from_votes(
        np.r_[a, np.zeros(30, int)],
        np.r_[b, np.full(30, 4)],
        np.r_[outcome, np.full(30, A_WINS)],
        5,
    )
    ratings = bt_fit(table)
    assert np.argmin(ratings) == 4
    assert ratings[4] > -1000


def test_exclude_ties_leaves_a_contender_with_only_ties_unrated():
    a, b, outcome = small_league(np.random.default_rng(9))
    table = PairTable.from_votes(np.r_[a, 4, 4], np.r_[b, 1, 2], np.r_[outcome, TIE, TIE], 5)
    with_ties = bt_board(table)
    without = bt_board(table, exclude_ties=True)
    assert np.isfinite(with_ties.rating[4])
    assert np.isnan(without.rating[4])
    assert without.votes[4] == 0
    assert without.rank[4] == 5
    assert without.order()[-1] == 4
    assert np.all(np.isfinite(without.rating[:4]))
    assert np.nanmean(without.rating) == pytest.approx(1000)


def test_tie_weights_of_zero_equal_excluding_ties():
    a, b, outcome = small_league(np.random.default_rng(10))
    outcome = np.where(np.arange(outcome.size) % 7 == 0, BOTH_BAD, outcome)
    table = PairTable.from_votes(a, b, outcome, 4)
    np.testing.assert_allclose(
        bt_fit(table, tie_weight=0, both_bad_weight=0),
        bt_fit(table, exclude_ties=True),
        atol=1e-9,
    )


def test_the_board_counts_wins_losses_and_ties_per_contender():
    table = PairTable.from_votes(
        [0, 0, 1, 2, 0], [1, 2, 2, 0, 0], [A_WINS, B_WINS, TIE, BOTH_BAD, A_WINS], 3
    )
    board = bt_board(table, min_votes=3)
    assert board.wins.tolist() == [1, 0, 1]
    assert board.losses.tolist() == [1, 1, 0]
    assert board.ties.tolist() == [1, 1, 2]
    assert board.votes.tolist() == [3, 2, 3]  # the self-vote 0 v 0 is ignored
    assert board.win_rate.tolist() == [0.5, 0.0, 1.0]
    assert board.provisional.tolist() == [False, True, False]


def test_unknown_interval_method_is_refused(arena):
    with pytest.raises(ValueError, match="ci must be"):
        bt_board(arena, ci="jackknife")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None, database=None)
@given(st.permutations(range(5)), st.integers(0, 2**32 - 1))
def test_relabelling_the_contenders_relabels_their_ratings(permutation, seed):
    a, b, outcome = simulate(
        np.array([-0.4, -0.1, 0.0, 0.2, 0.4]), 300, np.random.default_rng(seed), tie_rate=0.2
    )
    new = np.array(permutation)
    table = PairTable.from_votes(a, b, outcome, 5)
    relabelled = PairTable.from_votes(new[a], new[b], outcome, 5)
    np.testing.assert_allclose(bt_fit(relabelled)[new], bt_fit(table), atol=1e-7)


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(0, 100)), min_size=1, max_size=30))
def test_rank_is_one_plus_the_contenders_clearly_above(intervals):
    lower = np.array([centre - half for centre, half in intervals])
    upper = np.array([centre + half for centre, half in intervals])
    expected = [1 + int(np.sum(lower > up)) for up in upper]
    assert rank_ub(lower, upper).tolist() == expected


def test_a_bootstrap_of_one_vote_survives_rounds_that_draw_no_vote():
    # Poisson(1) draws zero about a third of the time: many of the 100 rounds have no
    # contender at all (this raised ZeroDivisionError in the Newton solve).
    table = PairTable.from_votes([0], [1], [A_WINS], 3)
    board = bt_board(table, ci="bootstrap", rounds=100)
    assert np.all(np.isfinite(board.lower[:2])) and np.all(np.isfinite(board.upper[:2]))
    assert np.isnan(board.rating[2]) and board.rank[2] == 3
    assert np.all(board.lower[:2] <= board.rating[:2] + 1e-9)
