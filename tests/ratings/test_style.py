"""Style control: features, recovery of known coefficients, agreement with a plain regression."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from ratings.bt import A_WINS, B_WINS, TIE, PairTable, bt_fit
from ratings.style import markdown_counts, style_control_fit, style_features

POINTS = 400 / math.log(10)


def answer_counts(rng, votes):
    """Token length, headers, list items and bold spans of `votes` answers."""
    length = rng.gamma(2.0, 250.0, votes)
    markdown = rng.poisson(np.outer(length / 500, [1.5, 4.0, 2.5]))
    return np.column_stack([np.round(length), markdown])


def style_votes(rng, strengths, coef, votes, tie_rate=0.2):
    """Votes whose expected score (a tie worth half) is the contextual BT probability."""
    n = strengths.size
    a = rng.integers(0, n, votes)
    b = (a + rng.integers(1, n, votes)) % n
    features = style_features(answer_counts(rng, votes), answer_counts(rng, votes))
    p = expit(strengths[a] - strengths[b] + features @ coef)
    tie_prob = tie_rate * np.minimum(1.0, 2 * np.minimum(p, 1 - p))
    tie = rng.random(votes) < tie_prob
    a_wins = rng.random(votes) < (p - tie_prob / 2) / (1 - tie_prob)
    outcome = np.where(tie, TIE, np.where(a_wins, A_WINS, B_WINS))
    return a, b, outcome, features


def per_vote_reference(a, b, outcome, features, n, reg):
    """FastChat's contextual Bradley-Terry on per-vote rows (a tie as a 0.5 label), with the
    L2 penalty on the style coefficients only, fitted by L-BFGS."""
    score = np.where(outcome == A_WINS, 1.0, np.where(outcome == B_WINS, 0.0, 0.5))
    size = score.size

    def loss(params):
        theta, beta = params[:n], params[n:]
        t = theta[a] - theta[b] + features @ beta
        value = -(score * log_expit(t) + (1 - score) * log_expit(-t)).sum() + reg / 2 * beta @ beta
        resid = expit(t) - score
        grad = np.r_[
            np.bincount(a, resid, n) - np.bincount(b, resid, n), features.T @ resid + reg * beta
        ]
        return value / size, grad / size

    start = np.zeros(n + features.shape[1])
    result = minimize(
        loss,
        start,
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 20000, "maxcor": 30},
    )
    theta = result.x[:n] - result.x[:n].mean()
    return 1000 + POINTS * theta, result.x[n:]


@pytest.fixture(scope="module")
def league():
    rng = np.random.default_rng(42)
    strengths = np.array([-0.6, -0.3, 0.0, 0.1, 0.3, 0.5])
    coef = np.array([0.4, 0.1, -0.1, 0.2])
    return strengths, coef, style_votes(rng, strengths, coef, 30_000)


def test_features_compare_the_two_answers_before_normalising():
    features = style_features([[100, 0, 3, 1]], [[50, 2, 3, 0]], normalise=False)
    np.testing.assert_allclose(features, [[50 / 151, -2 / 3, 0.0, 1 / 2]])


def test_normalised_features_have_zero_mean_unit_spread_and_flip_with_the_sides():
    rng = np.random.default_rng(0)
    left, right = answer_counts(rng, 500), answer_counts(rng, 500)
    left[:, 1] = right[:, 1] = 2  # no answer differs in headers
    features = style_features(left, right)
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(features.std(axis=0), [1, 0, 1, 1])
    np.testing.assert_allclose(style_features(right, left), -features, atol=1e-12)


def test_markdown_counts_headers_list_items_and_bold_outside_code():
    text = (
        "# Title\n\nSome **bold** and __also bold__ text.\n\n- one\n- two\n1. three\n\n"
        "```python\n# not a header\n- not a list\n```\n## Part two\n"
    )
    assert markdown_counts(text) == (2, 3, 2)


def test_coefficients_and_strengths_are_recovered(league):
    strengths, coef, (a, b, outcome, features) = league
    board = style_control_fit(a, b, outcome, features, 6, rounds=60, seed=3)
    coef_se = (board.coef_upper - board.coef_lower) / (2 * 1.96)
    assert np.all(np.abs(board.coef - coef) < 4 * coef_se)
    assert np.abs(board.coef - coef).max() < 0.05
    truth = 1000 + POINTS * (strengths - strengths.mean())
    rating_se = (board.upper - board.lower) / (2 * 1.96)
    assert np.all(np.abs(board.rating - truth) < 4 * rating_se)


def test_the_fit_sits_at_the_penalised_likelihood_maximum(league):
    _, _, (a, b, outcome, features) = league
    board = style_control_fit(a, b, outcome, features, 6, rounds=0, reg=0.5)
    theta = (board.rating - 1000) / POINTS
    score = np.where(outcome == A_WINS, 1.0, np.where(outcome == B_WINS, 0.0, 0.5))
    resid = score - expit(theta[a] - theta[b] + features @ board.coef)
    grad_theta = np.bincount(a, resid, 6) - np.bincount(b, resid, 6)
    grad_coef = features.T @ resid - 0.5 * board.coef
    assert np.abs(grad_theta).max() / a.size < 1e-10
    assert np.abs(grad_coef).max() / a.size < 1e-10


def test_style_control_agrees_with_a_per_vote_logistic_regression(league):
    _, _, (a, b, outcome, features) = league
    board = style_control_fit(a, b, outcome, features, 6, rounds=0, reg=0.5)
    ratings, coef = per_vote_reference(a, b, outcome, features, 6, reg=0.5)
    assert np.abs(board.rating - ratings).max() < 0.01
    assert np.abs(board.coef - coef).max() < 1e-5


def test_without_style_differences_it_is_plain_bradley_terry(league):
    _, _, (a, b, outcome, features) = league
    board = style_control_fit(a, b, outcome, np.zeros_like(features), 6, rounds=0)
    plain = bt_fit(PairTable.from_votes(a, b, outcome, 6))
    np.testing.assert_allclose(board.rating, plain, atol=1e-6)
    np.testing.assert_allclose(board.coef, 0, atol=1e-12)


def test_style_ratings_ignore_vote_order_and_sides(league):
    _, _, (a, b, outcome, features) = league
    rng = np.random.default_rng(5)
    order = rng.permutation(a.size)
    swap = rng.random(a.size) < 0.5
    a2, b2, out2, f2 = a[order], b[order], outcome[order], features[order]
    a2, b2 = np.where(swap, b2, a2), np.where(swap, a2, b2)
    out2 = np.where(swap & (out2 <= B_WINS), 1 - out2, out2)
    f2 = np.where(swap[:, None], -f2, f2)
    first = style_control_fit(a, b, outcome, features, 6, rounds=0)
    second = style_control_fit(a2, b2, out2, f2, 6, rounds=0)
    np.testing.assert_allclose(second.rating, first.rating, atol=1e-7)
    np.testing.assert_allclose(second.coef, first.coef, atol=1e-9)


def test_bootstrap_spread_matches_the_coefficients_standard_errors():
    rng = np.random.default_rng(8)
    strengths = np.array([-0.4, 0.0, 0.2, 0.5])
    coef = np.array([0.3, 0.0, 0.1, -0.1])
    a, b, outcome, features = style_votes(rng, strengths, coef, 20_000, tie_rate=0.0)
    board = style_control_fit(a, b, outcome, features, 4, rounds=200, seed=1, reg=0.0)
    # Fisher information of the per-vote logistic model, with the strengths' mean fixed.
    design = np.zeros((a.size, 4 + 4))
    design[np.arange(a.size), a] = 1.0
    design[np.arange(a.size), b] = -1.0
    design[:, 4:] = features
    theta = (board.rating - 1000) / POINTS
    p = expit(theta[a] - theta[b] + features @ board.coef)
    information = design.T @ (design * (p * (1 - p))[:, None])
    covariance = np.linalg.pinv(information)
    half_width = 1.96 * np.sqrt(np.diag(covariance)[4:])
    ratio = (board.coef_upper - board.coef_lower) / 2 / half_width
    assert np.all((ratio > 0.8) & (ratio < 1.25))


def test_an_anchor_pins_one_contender(league):
    _, _, (a, b, outcome, features) = league
    board = style_control_fit(a, b, outcome, features, 6, rounds=20, anchor=(2, 1200.0))
    free = style_control_fit(a, b, outcome, features, 6, rounds=0)
    assert board.rating[2] == pytest.approx(1200.0)
    assert board.upper[2] - board.lower[2] == pytest.approx(0.0, abs=1e-9)
    shift = board.rating - free.rating
    np.testing.assert_allclose(shift, shift[0], atol=1e-9)


def test_without_rounds_there_are_no_intervals(league):
    _, _, (a, b, outcome, features) = league
    board = style_control_fit(a, b, outcome, features, 6, rounds=0)
    assert np.all(np.isnan(board.lower)) and np.all(np.isnan(board.coef_upper))
    assert board.rank.tolist() == [1] * 6


def test_a_contender_that_never_lost_and_one_with_two_votes_stay_finite(league):
    _, _, (a, b, outcome, features) = league
    extra = 25
    a2 = np.r_[a, np.full(extra, 6), 7, 7]
    b2 = np.r_[b, np.arange(extra) % 6, 0, 1]
    out2 = np.r_[outcome, np.full(extra, A_WINS), A_WINS, B_WINS]
    f2 = np.r_[features, np.zeros((extra + 2, 4))]
    board = style_control_fit(a2, b2, out2, f2, 8, rounds=40, seed=2)
    assert board.regularised
    assert np.all(np.isfinite(board.rating))
    assert np.all(np.isfinite(board.lower)) and np.all(np.isfinite(board.upper))
    assert board.rating[6] == board.rating.max()
    assert board.provisional[6] and board.provisional[7]
    assert board.votes[7] == 2


def test_features_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="features"):
        style_control_fit([0, 1], [1, 0], [A_WINS, B_WINS], np.zeros((3, 4)), 2)


def test_only_excluded_ties_raise_a_clear_error():
    with pytest.raises(ValueError, match="win credit"):
        style_control_fit([0], [1], [TIE], np.zeros((1, 4)), 2, exclude_ties=True)
