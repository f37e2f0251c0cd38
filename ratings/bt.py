"""Bradley-Terry ratings from aggregated pairwise votes, following LMArena's conventions.

The model is P(a beats b) = 1 / (1 + base ** ((R_b - R_a) / scale)) with ratings on a
400-point, base-10 scale centred on 1000: the mean of the underlying strengths is fixed at
zero over the rated contenders (or one contender is anchored to a chosen score). A tie and a
both-bad vote each credit half a win to each side by default, as FastChat's
``compute_mle_elo`` (ties as two half rows) and lmarena's ``arena-rank`` do.

Everything works on counts aggregated per (contender a, contender b, outcome), the shape a SQL
``GROUP BY`` returns, so the cost depends on the number of contender pairs, not on the number
of votes. Fits are maximum likelihood by Newton's method, run until a full step moves no
strength by more than 1e-7 natural units (what is left is of the order of its square). When
no maximum exists (a contender never lost or never won, or the contenders split into groups
that never beat each other) a weak prior is added, see ``prior_votes``. Hessians are dense
(contenders x contenders): comfortable up to a few hundred contenders.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, log_expit
from scipy.stats import norm

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]

A_WINS, B_WINS, TIE, BOTH_BAD = 0, 1, 2, 3
OUTCOMES = 4
# Below 50 votes a contender's 95% interval is wider than about +-100 points (a 64% expected
# win rate), too vague to rank publicly; such contenders are flagged provisional.
DEFAULT_MIN_VOTES = 50

# A fit stops after a full Newton step that moved no strength by more than this (natural
# units); Newton converges quadratically, so the error left is of the order of its square.
_STEP_TOL = 1e-7
_MAX_ITER = 200
_MAX_HALVINGS = 60
_SAFE_STEP = 0.25  # Newton steps up to this size (natural units) skip the line search
_BINCOUNT_CELLS = 1 << 22  # above this many (a, b, outcome) cells, aggregate by sorting
_HESSIAN_BUDGET = 4_000_000  # float64 entries of stacked Hessians built at once


def check_votes(a: ArrayLike, b: ArrayLike, outcome: ArrayLike, n: int) -> tuple[Ints, Ints, Ints]:
    """Validate per-vote arrays and return them as int64; raise ValueError naming the problem."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    a_ = np.asarray(a)
    b_ = np.asarray(b)
    o_ = np.asarray(outcome)
    if a_.ndim != 1 or a_.shape != b_.shape or a_.shape != o_.shape:
        raise ValueError(
            f"a, b and outcome must be 1-D arrays of one length, got shapes "
            f"{a_.shape}, {b_.shape} and {o_.shape}"
        )
    for name, arr in (("a", a_), ("b", b_), ("outcome", o_)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    a_ = a_.astype(np.int64, copy=False)
    b_ = b_.astype(np.int64, copy=False)
    o_ = o_.astype(np.int64, copy=False)
    if a_.size:
        if min(a_.min(), b_.min()) < 0 or max(a_.max(), b_.max()) >= n:
            raise ValueError(f"contender indices must lie in [0, {n})")
        if o_.min() < A_WINS or o_.max() > BOTH_BAD:
            raise ValueError("outcome must be A_WINS, B_WINS, TIE or BOTH_BAD (0..3)")
    return a_, b_, o_


@dataclass(frozen=True)
class PairTable:
    """Votes aggregated per (contender a, contender b, outcome), one row per group with a count.

    Contenders are the indices 0..n-1 (n may include contenders without votes). Rows may
    repeat a key and counts may be zero; (a, b, A_WINS) and (b, a, B_WINS) mean the same.
    A vote of a contender against itself (a == b; LMArena's public data has a few) says
    nothing about strengths: the ratings ignore it.
    """

    a: Ints
    b: Ints
    outcome: NDArray[np.int8]
    count: Floats
    n: int

    def __post_init__(self) -> None:
        a, b, o = check_votes(self.a, self.b, self.outcome, self.n)
        count = np.asarray(self.count, dtype=np.float64)
        if count.shape != a.shape:
            raise ValueError(f"count has shape {count.shape}, expected {a.shape}")
        if count.size and (not np.all(np.isfinite(count)) or count.min() < 0):
            raise ValueError("counts must be finite and non-negative")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "outcome", o.astype(np.int8))
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "n", int(self.n))

    @classmethod
    def from_votes(cls, a: ArrayLike, b: ArrayLike, outcome: ArrayLike, n: int) -> PairTable:
        """Aggregate per-vote arrays (one entry per vote) into a table, entirely in numpy."""
        a_, b_, o_ = check_votes(a, b, outcome, n)
        key = a_ * n
        key += b_
        key *= OUTCOMES
        key += o_
        cells = n * n * OUTCOMES
        if cells <= _BINCOUNT_CELLS:
            per_cell = np.bincount(key, minlength=cells)
            keys = np.flatnonzero(per_cell)
            counts = per_cell[keys]
        else:
            keys, counts = np.unique(key, return_counts=True)
        pair, out = np.divmod(keys, OUTCOMES)
        ra, rb = np.divmod(pair, n)
        return cls(ra, rb, out.astype(np.int8), counts.astype(np.float64), n)


@dataclass(frozen=True)
class Board:
    """A leaderboard: one entry per contender index; NaN ratings for contenders without votes.

    ``votes`` counts the votes the fit used (without ties and both-bad under exclude_ties);
    ``wins``, ``losses`` and ``ties`` (tie + both-bad) are raw counts; ``win_rate`` is the
    share of decisive votes won. ``rank`` is ``rank_ub(lower, upper)``. ``regularised`` says
    the prior of ``prior_votes`` was needed because no maximum-likelihood fit exists.
    """

    rating: Floats
    lower: Floats
    upper: Floats
    rank: Ints
    votes: Floats
    wins: Floats
    losses: Floats
    ties: Floats
    win_rate: Floats
    provisional: Bools
    regularised: bool
    ci: str

    def order(self) -> Ints:
        """Contender indices from the highest rating down, unrated contenders last."""
        return np.lexsort((-np.nan_to_num(self.rating, nan=-np.inf), np.isnan(self.rating)))


@dataclass(frozen=True)
class _Options:
    tie_weight: float
    both_bad_weight: float
    exclude_ties: bool
    scale: float
    base: float
    init_rating: float
    anchor: tuple[int, float] | None
    prior_votes: float

    def __post_init__(self) -> None:
        for name in ("tie_weight", "both_bad_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be positive, got {self.scale!r}")
        if not (math.isfinite(self.base) and self.base > 1):
            raise ValueError(f"base must be greater than 1, got {self.base!r}")
        if not (math.isfinite(self.prior_votes) and self.prior_votes > 0):
            raise ValueError(f"prior_votes must be positive, got {self.prior_votes!r}")

    @property
    def factor(self) -> float:
        """Rating points per natural-log unit of strength."""
        return self.scale / math.log(self.base)

    @property
    def weights(self) -> tuple[float, float]:
        if self.exclude_ties:
            return 0.0, 0.0
        return self.tie_weight, self.both_bad_weight


@dataclass(frozen=True)
class _Fit:
    theta: Floats  # (n,) strengths in natural units, mean zero over rated, NaN when unrated
    rated: Bools  # (n,)
    lo: Ints  # (P,) pair endpoints re-indexed over rated contenders, lo < hi
    hi: Ints
    counts: Floats  # (P, 4): lo wins, hi wins, tie, both-bad
    w_lo: Floats  # (P,) win credit of lo against hi
    w_hi: Floats
    prior: float  # virtual votes per contender, 0.0 when the plain MLE exists


def rank_ub(lower: ArrayLike, upper: ArrayLike) -> Ints:
    """Rank as 1 + the number of contenders whose lower bound is above this one's upper bound.

    Contenders whose interval is NaN (no votes) rank after every contender with an interval.
    """
    lo = np.asarray(lower, dtype=np.float64)
    up = np.asarray(upper, dtype=np.float64)
    if lo.shape != up.shape or lo.ndim != 1:
        raise ValueError(f"lower and upper must be 1-D of one length, got {lo.shape}, {up.shape}")
    valid = np.isfinite(lo) & np.isfinite(up)
    if np.any(lo[valid] > up[valid]):
        raise ValueError("every lower bound must be <= its upper bound")
    lows = np.sort(lo[valid])
    above = lows.size - np.searchsorted(lows, up, side="right")
    rank = (1 + above).astype(np.int64)
    rank[~valid] = 1 + lows.size
    return rank


def bt_fit(
    table: PairTable,
    *,
    tie_weight: float = 0.5,
    both_bad_weight: float = 0.5,
    exclude_ties: bool = False,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
    anchor: tuple[int, float] | None = None,
    prior_votes: float = 1.0,
) -> Floats:
    """Maximum-likelihood Bradley-Terry ratings, one per contender (NaN without votes).

    tie_weight / both_bad_weight: win credit a tie / both-bad vote gives to each side (0.5 is
    LMArena's half a win each; 0 ignores them). exclude_ties drops ties and both-bad votes.
    anchor=(index, score) pins one contender's rating instead of centring the mean on
    init_rating. prior_votes: only when no maximum exists, each contender plays this many
    virtual ties against a virtual contender of strength zero (the mean), which keeps an
    unbeaten or winless contender finite (a contender with k wins and no loss against an
    opponent rated R ends near R + scale * log_base(2k / prior_votes)).
    """
    opts = _options(
        tie_weight, both_bad_weight, exclude_ties, scale, base, init_rating, anchor, prior_votes
    )
    fit = _fit_table(table, opts)
    return _to_rating(fit.theta, opts)


def bt_bootstrap(
    table: PairTable,
    *,
    rounds: int = 100,
    seed: int = 0,
    tie_weight: float = 0.5,
    both_bad_weight: float = 0.5,
    exclude_ties: bool = False,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
    anchor: tuple[int, float] | None = None,
    prior_votes: float = 1.0,
) -> Floats:
    """Ratings refitted on ``rounds`` bootstrap resamples of the votes, shape (rounds, n).

    Each round draws every cell of the pair table from Poisson(count), the Poisson bootstrap
    of the votes (asymptotically the multinomial resampling FastChat uses), seeded by seed.
    A contender that draws no vote in a round is NaN in that round.
    """
    opts = _options(
        tie_weight, both_bad_weight, exclude_ties, scale, base, init_rating, anchor, prior_votes
    )
    fit = _fit_table(table, opts)
    return _to_rating(_bootstrap_theta(fit, opts, rounds, seed), opts)


def bt_board(
    table: PairTable,
    *,
    ci: Literal["bootstrap", "sandwich"] = "sandwich",
    rounds: int = 100,
    seed: int = 0,
    alpha: float = 0.05,
    min_votes: float = DEFAULT_MIN_VOTES,
    tie_weight: float = 0.5,
    both_bad_weight: float = 0.5,
    exclude_ties: bool = False,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
    anchor: tuple[int, float] | None = None,
    prior_votes: float = 1.0,
) -> Board:
    """The leaderboard: ratings with (1 - alpha) intervals, ranks, vote counts and flags.

    ci="sandwich" gives rating +- z * robust standard error (inverse Hessian times the outer
    product of per-vote scores times inverse Hessian, as arena-rank does); ci="bootstrap"
    gives the alpha/2 and 1 - alpha/2 percentiles of ``bt_bootstrap``. Contenders with fewer
    than min_votes votes are provisional. Other options as in ``bt_fit``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    opts = _options(
        tie_weight, both_bad_weight, exclude_ties, scale, base, init_rating, anchor, prior_votes
    )
    fit = _fit_table(table, opts)
    rating = _to_rating(fit.theta, opts)
    n = table.n
    lower = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    if ci == "sandwich":
        half = norm.ppf(1 - alpha / 2) * opts.factor * _sandwich_se(fit, opts)
        lower[fit.rated] = rating[fit.rated] - half
        upper[fit.rated] = rating[fit.rated] + half
    elif ci == "bootstrap":
        samples = _to_rating(_bootstrap_theta(fit, opts, rounds, seed), opts)[:, fit.rated]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a contender NaN in every round
            bounds = np.nanpercentile(samples, [50 * alpha, 100 - 50 * alpha], axis=0)
        lower[fit.rated], upper[fit.rated] = bounds
    else:
        raise ValueError(f"ci must be 'sandwich' or 'bootstrap', got {ci!r}")

    votes, wins, losses, ties = _contender_counts(table, opts)
    decisive = wins + losses
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = np.where(decisive > 0, wins / decisive, np.nan)
    return Board(
        rating=rating,
        lower=lower,
        upper=upper,
        rank=rank_ub(lower, upper),
        votes=votes,
        wins=wins,
        losses=losses,
        ties=ties,
        win_rate=win_rate,
        provisional=votes < min_votes,
        regularised=fit.prior > 0,
        ci=ci,
    )


def _options(
    tie_weight: float,
    both_bad_weight: float,
    exclude_ties: bool,
    scale: float,
    base: float,
    init_rating: float,
    anchor: tuple[int, float] | None,
    prior_votes: float,
) -> _Options:
    return _Options(
        float(tie_weight),
        float(both_bad_weight),
        bool(exclude_ties),
        float(scale),
        float(base),
        float(init_rating),
        anchor,
        float(prior_votes),
    )


def _canonical_pairs(table: PairTable) -> tuple[Ints, Ints, Floats]:
    """Merge a table into unordered pairs lo < hi with counts (lo wins, hi wins, tie, both-bad).

    Which side a contender was shown on does not enter the model, so (a, b, A_WINS) and
    (b, a, B_WINS) fall into one cell; cells come out sorted, independent of row order.
    """
    keep = (table.count > 0) & (table.a != table.b)
    a, b, out, count = table.a[keep], table.b[keep], table.outcome[keep], table.count[keep]
    swap = a > b
    lo = np.where(swap, b, a)
    hi = np.where(swap, a, b)
    cls = out.astype(np.int64)
    cls = np.where(swap & (cls <= B_WINS), 1 - cls, cls)
    keys, inverse = np.unique(lo * table.n + hi, return_inverse=True)
    counts = np.asarray(
        np.bincount(inverse * OUTCOMES + cls, weights=count, minlength=keys.size * OUTCOMES),
        dtype=np.float64,
    )
    pair_lo, pair_hi = np.divmod(keys, table.n)
    return pair_lo, pair_hi, counts.reshape(-1, OUTCOMES)


def _credits(counts: Floats, opts: _Options) -> tuple[Floats, Floats]:
    """Win credit of lo and of hi per pair, from counts of shape (..., 4)."""
    tie_w, both_bad_w = opts.weights
    shared = tie_w * counts[..., TIE] + both_bad_w * counts[..., BOTH_BAD]
    return counts[..., A_WINS] + shared, counts[..., B_WINS] + shared


def _fit_table(table: PairTable, opts: _Options) -> _Fit:
    if table.n == 0 or table.count.sum() == 0:
        raise ValueError("the table holds no votes: nothing to rate")
    lo, hi, counts = _canonical_pairs(table)
    w_lo, w_hi = _credits(counts, opts)
    used = (w_lo + w_hi) > 0
    if not used.any():
        raise ValueError("no vote carries any win credit (only ties, excluded or weighted 0)")
    lo, hi, counts, w_lo, w_hi = lo[used], hi[used], counts[used], w_lo[used], w_hi[used]
    rated = np.zeros(table.n, dtype=bool)
    rated[lo] = True
    rated[hi] = True
    if opts.anchor is not None:
        k = opts.anchor[0]
        if not 0 <= k < table.n:
            raise ValueError(f"anchor index {k} is outside [0, {table.n})")
        if not rated[k]:
            raise ValueError(f"anchor contender {k} has no votes to rate it by")
    local = np.cumsum(rated) - 1
    lo, hi = local[lo], local[hi]
    m = int(rated.sum())
    exists = bool(_mle_exists(lo, hi, w_lo[None], w_hi[None], m)[0])
    prior = 0.0 if exists else opts.prior_votes
    theta_rated = _newton(lo, hi, w_lo[None], w_hi[None], m, np.array([prior]), np.zeros((1, m)))
    theta = np.full(table.n, np.nan)
    theta[rated] = theta_rated[0]
    return _Fit(theta, rated, lo, hi, counts, w_lo, w_hi, prior)


def _to_rating(theta: Floats, opts: _Options) -> Floats:
    if opts.anchor is None:
        return opts.init_rating + opts.factor * theta
    k, score = opts.anchor
    return float(score) + opts.factor * (theta - theta[..., k : k + 1])


def _mle_exists(lo: Ints, hi: Ints, w_lo: Floats, w_hi: Floats, m: int) -> Bools:
    """Per round: is the "has beaten" graph strongly connected (Zermelo-Ford condition)?"""
    rounds = w_lo.shape[0]
    offset = (np.arange(rounds) * m)[:, None]
    src = np.concatenate([(lo + offset)[w_lo > 0], (hi + offset)[w_hi > 0]])
    dst = np.concatenate([(hi + offset)[w_lo > 0], (lo + offset)[w_hi > 0]])
    size = rounds * m
    graph = csr_matrix((np.ones(src.size), (src, dst)), shape=(size, size))
    _, labels = connected_components(graph, directed=True, connection="strong")
    labels = labels.reshape(rounds, m)
    return np.all(labels == labels[:, :1], axis=1)


def _newton(
    lo: Ints, hi: Ints, w_lo: Floats, w_hi: Floats, m: int, prior: Floats, theta0: Floats
) -> Floats:
    """Minimise the BT negative log-likelihood for a batch of rounds (rows of w_lo / w_hi).

    Newton's method on the strengths with their mean held at zero, a step-halving line
    search, and a stop once a full step moves no strength more than _STEP_TOL. Rounds run in
    chunks so that the stacked m x m Hessians stay within _HESSIAN_BUDGET entries.
    """
    if m == 0:  # a bootstrap round that drew no vote: nothing to fit
        return np.empty_like(theta0)
    chunk = max(1, _HESSIAN_BUDGET // max(1, m * m))
    out = np.empty_like(theta0)
    for start in range(0, theta0.shape[0], chunk):
        part = slice(start, start + chunk)
        out[part] = _newton_chunk(lo, hi, w_lo[part], w_hi[part], m, prior[part], theta0[part])
    return out


def _nll(theta: Floats, lo: Ints, hi: Ints, w_lo: Floats, w_hi: Floats, prior: Floats) -> Floats:
    d = theta[:, lo] - theta[:, hi]
    # w_lo * softplus(-d) + w_hi * softplus(d), with softplus(-d) = softplus(d) - d
    value = ((w_lo + w_hi) * -log_expit(-d) - w_lo * d).sum(axis=1)
    if prior.any():
        value += prior * (np.logaddexp(0.0, theta) - 0.5 * theta).sum(axis=1)
    return value


def _newton_chunk(
    lo: Ints, hi: Ints, w_lo: Floats, w_hi: Floats, m: int, prior: Floats, theta0: Floats
) -> Floats:
    rounds = theta0.shape[0]
    theta = theta0 - theta0.mean(axis=1, keepdims=True)
    total = w_lo + w_hi
    base = (np.arange(rounds) * m)[:, None]
    flat_lo = (base + lo).ravel()
    flat_hi = (base + hi).ravel()
    diag = np.arange(m) * (m + 1)
    off_lo_hi = lo * m + hi
    off_hi_lo = hi * m + lo
    hess = np.empty((rounds, m * m))
    for _ in range(_MAX_ITER):
        d = theta[:, lo] - theta[:, hi]
        p = expit(d)
        resid = total * p - w_lo  # derivative of the NLL in d, per pair
        curv = total * p * (1.0 - p)
        grad = _scatter(resid, flat_lo, rounds, m) - _scatter(resid, flat_hi, rounds, m)
        hess.fill(0.0)
        hess[:, off_lo_hi] = -curv
        hess[:, off_hi_lo] = -curv
        hess[:, diag] = _scatter(curv, flat_lo, rounds, m) + _scatter(curv, flat_hi, rounds, m)
        if prior.any():
            q = expit(theta)
            grad += prior[:, None] * (q - 0.5)
            hess[:, diag] += prior[:, None] * q * (1.0 - q)
        step = _centred_solve(hess.reshape(rounds, m, m), grad, project=bool(prior.any()))
        size = np.abs(step).max(axis=1)
        theta = _damped_step(theta, step, size, lo, hi, w_lo, w_hi, prior)
        theta -= theta.mean(axis=1, keepdims=True)
        if size.max() < _STEP_TOL:
            return theta
    raise RuntimeError("Bradley-Terry fit did not converge; please report this data set")


def _damped_step(
    theta: Floats,
    step: Floats,
    size: Floats,
    lo: Ints,
    hi: Ints,
    w_lo: Floats,
    w_hi: Floats,
    prior: Floats,
) -> Floats:
    """Apply the Newton steps, halving the large ones until they lower the NLL.

    A step of at most _SAFE_STEP changes every pair's logistic curvature by a factor within
    exp(+-2 * _SAFE_STEP), which keeps a full Newton step contracting: only larger steps
    (far from the optimum, e.g. from a cold start) pay for evaluating the NLL.
    """
    new = theta - step
    idx = np.flatnonzero(size > _SAFE_STEP)
    if idx.size == 0:
        return new
    sub = (lo, hi, w_lo[idx], w_hi[idx], prior[idx])
    value = _nll(theta[idx], *sub)
    slack = 1e-12 * np.maximum(1.0, np.abs(value))
    scale = np.ones(idx.size)
    trial = new[idx]
    trial_value = _nll(trial, *sub)
    for _ in range(_MAX_HALVINGS):
        bad = trial_value > value + slack
        if not bad.any():
            break
        scale[bad] /= 2
        trial[bad] = theta[idx[bad]] - scale[bad, None] * step[idx[bad]]
        trial_value[bad] = _nll(trial[bad], lo, hi, w_lo[idx[bad]], w_hi[idx[bad]], prior[idx[bad]])
    new[idx] = trial
    return new


def _scatter(values: Floats, flat_index: Ints, rounds: int, m: int) -> Floats:
    sums = np.bincount(flat_index, weights=values.ravel(), minlength=rounds * m)
    return np.asarray(sums, dtype=np.float64).reshape(rounds, m)


def _centred_solve(hess: Floats, grad: Floats, *, project: bool) -> Floats:
    """Newton step with the mean of the strengths held fixed, for a stack of systems.

    Solves (P H P + J / m) x = P g with P the centring projector and J the all-ones matrix:
    the answer has zero mean and is the Newton step restricted to mean-zero directions.
    Without a prior H is a graph Laplacian (rows sum to zero), so P H P = H: skip P.
    """
    m = hess.shape[-1]
    if project:
        hess = (
            hess
            - hess.mean(axis=-1, keepdims=True)
            - hess.mean(axis=-2, keepdims=True)
            + hess.mean(axis=(-2, -1), keepdims=True)
        )
    projected = hess + 1.0 / m
    rhs = grad - grad.mean(axis=-1, keepdims=True)
    return np.linalg.solve(projected, rhs[..., None])[..., 0]


def _centred_inverse(hess: Floats) -> Floats:
    """Pseudo-inverse of a Hessian on the mean-zero subspace."""
    m = hess.shape[-1]
    projected = (
        hess
        - hess.mean(axis=-1, keepdims=True)
        - hess.mean(axis=-2, keepdims=True)
        + hess.mean(axis=(-2, -1), keepdims=True)
    )
    return np.linalg.inv(projected + 1.0 / m) - 1.0 / m


def _laplacian(lo: Ints, hi: Ints, weight: Floats, m: int) -> Floats:
    """Sum over pairs of weight * (e_lo - e_hi)(e_lo - e_hi)^T."""
    mat = np.zeros((m, m))
    mat[lo, hi] = -weight
    mat[hi, lo] = -weight
    mat[np.arange(m), np.arange(m)] = np.bincount(lo, weight, m) + np.bincount(hi, weight, m)
    return mat


def _sandwich_se(fit: _Fit, opts: _Options) -> Floats:
    """Robust standard errors of the rated contenders' strengths (natural units)."""
    theta = fit.theta[fit.rated]
    m = theta.size
    p = expit(theta[fit.lo] - theta[fit.hi])
    bread = _laplacian(fit.lo, fit.hi, (fit.w_lo + fit.w_hi) * p * (1 - p), m)
    if fit.prior > 0:
        q = expit(theta)
        bread[np.arange(m), np.arange(m)] += fit.prior * q * (1 - q)
    # Per-vote score of the NLL in d = theta_lo - theta_hi, squared and summed per cell.
    tie_w, both_bad_w = opts.weights
    c = fit.counts
    meat_w = (
        c[:, A_WINS] * (1 - p) ** 2
        + c[:, B_WINS] * p**2
        + (tie_w**2 * c[:, TIE] + both_bad_w**2 * c[:, BOTH_BAD]) * (1 - 2 * p) ** 2
    )
    inverse = _centred_inverse(bread)
    cov = inverse @ _laplacian(fit.lo, fit.hi, meat_w, m) @ inverse
    var = np.diag(cov).copy()
    if opts.anchor is not None:
        k = int(np.cumsum(fit.rated)[opts.anchor[0]] - 1)
        var = var + cov[k, k] - 2 * cov[:, k]
    return np.sqrt(np.maximum(var, 0.0))


def _bootstrap_theta(fit: _Fit, opts: _Options, rounds: int, seed: int) -> Floats:
    """Strengths refitted on Poisson-resampled counts, (rounds, n), NaN where unrated."""
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    w_lo, w_hi = _resampled_credits(fit, opts, rounds, np.random.default_rng(seed))
    m = int(fit.rated.sum())
    # Resampling can only empty cells, never fill one: a round in which no credit of the
    # full data vanished has the same "has beaten" graph, hence every contender and the same
    # answer to whether the maximum exists. Only the other rounds need checking.
    lost_lo = (w_lo == 0) & (fit.w_lo > 0)
    lost_hi = (w_hi == 0) & (fit.w_hi > 0)
    vanished = (lost_lo | lost_hi).any(axis=1)
    present = np.ones((rounds, m), dtype=bool)
    prior = np.full(rounds, fit.prior)
    check = np.flatnonzero(vanished)
    if check.size:
        flat = (np.arange(check.size) * m)[:, None]
        has_votes = (w_lo[check] + w_hi[check] > 0).astype(np.float64)
        present[check] = (
            _scatter(has_votes, (flat + fit.lo).ravel(), check.size, m)
            + _scatter(has_votes, (flat + fit.hi).ravel(), check.size, m)
        ) > 0
        exists = _mle_exists(fit.lo, fit.hi, w_lo[check], w_hi[check], m)
        prior[check] = np.where(exists, 0.0, opts.prior_votes)
    complete = present.all(axis=1)

    theta = np.full((rounds, m), np.nan)
    idx = np.flatnonzero(complete)
    if idx.size:
        start = np.broadcast_to(fit.theta[fit.rated], (idx.size, m))
        theta[idx] = _newton(fit.lo, fit.hi, w_lo[idx], w_hi[idx], m, prior[idx], start)
    for r in np.flatnonzero(~complete):
        theta[r] = _subset_fit(fit, w_lo[r], w_hi[r], present[r], opts)

    out = np.full((rounds, fit.rated.size), np.nan)
    out[:, fit.rated] = theta
    return out


def _resampled_credits(
    fit: _Fit, opts: _Options, rounds: int, rng: np.random.Generator
) -> tuple[Floats, Floats]:
    """Win credits of lo and hi per round and pair, each vote cell drawn from Poisson(count).

    Cells that give the same credit to both sides (ties and both-bad at one weight) are
    merged before drawing, since a sum of Poissons is Poisson: three draws per pair, not four.
    """
    tie_w, both_bad_w = opts.weights
    c = fit.counts
    if tie_w == both_bad_w:
        lam = [c[:, A_WINS], c[:, B_WINS], c[:, TIE] + c[:, BOTH_BAD]]
        shared_weights = [tie_w]
    else:
        lam = [c[:, A_WINS], c[:, B_WINS], c[:, TIE], c[:, BOTH_BAD]]
        shared_weights = [tie_w, both_bad_w]
    if not any(shared_weights):
        lam, shared_weights = lam[:2], []
    draws = rng.poisson(np.stack(lam), size=(rounds, len(lam), c.shape[0]))
    shared = np.zeros((rounds, c.shape[0]))
    for k, weight in enumerate(shared_weights):
        shared += weight * draws[:, 2 + k]
    return draws[:, 0] + shared, draws[:, 1] + shared


def _subset_fit(fit: _Fit, w_lo: Floats, w_hi: Floats, present: Bools, opts: _Options) -> Floats:
    """Refit one bootstrap round in which some contenders drew no vote (they stay NaN).

    With a handful of votes a round can draw none at all: every contender is NaN in it.
    """
    theta = np.full(present.size, np.nan)
    k = int(present.sum())
    if k == 0:
        return theta
    keep = (w_lo + w_hi) > 0
    local = np.cumsum(present) - 1
    lo, hi = local[fit.lo[keep]], local[fit.hi[keep]]
    wl, wh = w_lo[keep][None], w_hi[keep][None]
    prior = 0.0 if _mle_exists(lo, hi, wl, wh, k)[0] else opts.prior_votes
    start = fit.theta[fit.rated][present][None]
    theta[present] = _newton(lo, hi, wl, wh, k, np.array([prior]), start)[0]
    return theta


def _contender_counts(table: PairTable, opts: _Options) -> tuple[Floats, Floats, Floats, Floats]:
    """Per contender: votes used by the fit, wins, losses and ties (tie + both-bad)."""
    n = table.n
    keep = table.a != table.b
    a, b, out, count = table.a[keep], table.b[keep], table.outcome[keep], table.count[keep]

    def per_contender(mask: Bools, side: Ints) -> Floats:
        return np.asarray(np.bincount(side[mask], weights=count[mask], minlength=n), np.float64)

    a_won, b_won = out == A_WINS, out == B_WINS
    drawn = (out == TIE) | (out == BOTH_BAD)
    wins = per_contender(a_won, a) + per_contender(b_won, b)
    losses = per_contender(b_won, a) + per_contender(a_won, b)
    ties = per_contender(drawn, a) + per_contender(drawn, b)
    votes = wins + losses if opts.exclude_ties else wins + losses + ties
    return votes, wins, losses, ties
