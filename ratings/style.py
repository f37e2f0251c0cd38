"""Style control: Bradley-Terry ratings with the effect of answer style taken out.

LMArena's "style control" (FastChat ``compute_style_control``) fits a logistic regression
with the Bradley-Terry design (+1 for contender a, -1 for contender b) plus per-vote style
features of the two answers: length in tokens, markdown headers, list items and bold spans,
each as (a - b) / (a + b + 1) and then z-scored over the votes. The contender strengths of
that fit are the ratings "with style removed"; the feature coefficients say how much each
style element sways voters (natural-log odds per standard deviation of the feature).

Features are continuous, so the fit runs on one row per vote. It is Newton's method on the
(contenders + features) parameters, with rows sorted by contender pair once so that every
pass is a few vectorised sweeps and per-pair sums (``np.add.reduceat``); bootstrap rounds
reweight the rows (a multinomial resample of the votes, as FastChat does) and start from
the full-data fit, so each round converges in two passes.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ratings.bt import (
    _MAX_ITER,
    _SAFE_STEP,
    DEFAULT_MIN_VOTES,
    _laplacian,
    _mle_exists,
    _newton,
    _Options,
    _options,
    _to_rating,
    check_votes,
    rank_ub,
)

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]

STYLE_FEATURES = ("length", "headers", "lists", "bold")

# Rows per slice in a pass: the slice's working arrays (6 x 32k doubles) stay in cache, which
# makes a pass about twice as fast as whole-array numpy on a million rows.
_CHUNK = 1 << 15
# A fit stops once a full Newton step moved no vote's logit by more than its tolerance. Newton
# converges quadratically here (step sizes run 0.1, 5e-4, 2e-8 in a bootstrap round), so what
# is left after a step of size s is of order s^2 / 2: below 1e-6 natural units (2e-4 rating
# points) for bootstrap refits, far under the bootstrap's own noise, and 1e-14 for the fit.
_ROUND_TOL = 1e-3
_FIT_TOL = 1e-7

_CODE_BLOCK = re.compile(r"```[^`]*```")
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


@dataclass(frozen=True)
class StyleBoard:
    """Ratings with style removed, with bootstrap intervals, and the style coefficients.

    rating / lower / upper / rank / votes / provisional per contender as in ``bt.Board``;
    coef / coef_lower / coef_upper per feature (natural-log odds of winning per standard
    deviation of the normalised feature, positive when voters favour more of it).
    """

    rating: Floats
    lower: Floats
    upper: Floats
    rank: Ints
    votes: Floats
    provisional: Bools
    coef: Floats
    coef_lower: Floats
    coef_upper: Floats
    regularised: bool


def markdown_counts(text: str) -> tuple[int, int, int]:
    """Markdown headers, list items and bold spans in an answer, counted as FastChat does.

    Fenced code blocks are removed first, so code comments do not count as headers.
    """
    text = _CODE_BLOCK.sub("", text)
    return len(_HEADER.findall(text)), len(_LIST_ITEM.findall(text)), len(_BOLD.findall(text))


def style_features(counts_a: ArrayLike, counts_b: ArrayLike, *, normalise: bool = True) -> Floats:
    """Per-vote style features from the two answers' counts, each (votes, k), e.g. k = 4.

    Column f is (a - b) / (a + b + 1) for the answers' counts in that column (token length,
    headers, list items, bold spans in LMArena's order), then z-scored over the votes
    (population standard deviation, as FastChat). A constant column becomes zeros.
    """
    a = np.asarray(counts_a, dtype=np.float64)
    b = np.asarray(counts_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"counts must be 2-D of one shape, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or (
        a.size and min(a.min(), b.min()) < 0
    ):
        raise ValueError("counts must be finite and non-negative")
    features = (a - b) / (a + b + 1.0)
    if not normalise or features.shape[0] == 0:
        return features
    std = features.std(axis=0)
    centred = features - features.mean(axis=0)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


@dataclass(frozen=True)
class _Chunk:
    """A slice of rows small enough for the CPU cache, with the pairs it overlaps."""

    start: int
    stop: int
    pairs: Ints  # pair indices overlapping the slice, in order
    starts: Ints  # where each of those pairs begins inside the slice
    lengths: Ints  # how many of its rows lie inside the slice


@dataclass(frozen=True)
class _Rows:
    """Votes as rows sorted by contender pair, lo < hi, features signed from lo's side."""

    ft: Floats  # (k, N) features, transposed for contiguous per-feature sweeps
    credit: Floats  # (N,) total win credit of the vote
    credit_lo: Floats  # (N,) credit of lo
    unit_credit: bool  # every vote carries credit 1 (no tie weighting): skip a multiply
    starts: Ints  # (S,) first row of each pair
    lengths: Ints  # (S,) rows per pair
    lo: Ints  # (S,) pair endpoints, re-indexed over rated contenders
    hi: Ints
    m: int
    feature_span: Floats  # (k,) largest |feature| per column, bounds a step's effect
    chunks: list[_Chunk]


@dataclass
class _Pass:
    grad: Floats
    hess: Floats


def style_control_fit(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    features: ArrayLike,
    n: int,
    *,
    rounds: int = 100,
    seed: int = 0,
    alpha: float = 0.05,
    min_votes: float = DEFAULT_MIN_VOTES,
    reg: float = 0.5,
    tie_weight: float = 0.5,
    both_bad_weight: float = 0.5,
    exclude_ties: bool = False,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
    anchor: tuple[int, float] | None = None,
    prior_votes: float = 1.0,
) -> StyleBoard:
    """Contextual Bradley-Terry on per-vote rows: ratings with style removed, coefficients.

    features is (votes, k), from ``style_features``. reg is an L2 penalty on the style
    coefficients only (0.5 is FastChat's value, which FastChat puts on the strengths too; it
    is negligible beyond a few hundred votes). The strengths are unpenalised, mean zero (or
    anchored), with the same prior_votes rule as ``bt.bt_fit`` when no maximum exists.
    Intervals are percentiles of ``rounds`` bootstrap refits on multinomial resamples of the
    votes (seeded); rounds=0 skips them (NaN bounds).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 0:
        raise ValueError(f"rounds must be a non-negative integer, got {rounds!r}")
    if not (math.isfinite(reg) and reg >= 0):
        raise ValueError(f"reg must be finite and >= 0, got {reg!r}")
    opts = _options(
        tie_weight, both_bad_weight, exclude_ties, scale, base, init_rating, anchor, prior_votes
    )
    a_, b_, o_ = check_votes(a, b, outcome, n)
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] != a_.size:
        raise ValueError(f"features must be (votes, k) with {a_.size} rows, got {feats.shape}")
    if not np.all(np.isfinite(feats)):
        raise ValueError("features must be finite")

    rows, rated, votes = _sort_rows(a_, b_, o_, feats, n, opts)
    if opts.anchor is not None and not (0 <= opts.anchor[0] < n and rated[opts.anchor[0]]):
        raise ValueError(f"anchor contender {opts.anchor[0]} is not a rated contender")
    k = feats.shape[1]
    seg_lo, seg_hi = _pair_credits(rows, rows.credit, rows.credit_lo)
    exists = bool(_mle_exists(rows.lo, rows.hi, seg_lo[None], seg_hi[None], rows.m)[0])
    prior = 0.0 if exists else opts.prior_votes
    # Start from plain Bradley-Terry on the same votes: the style terms are a correction.
    theta0 = _newton(
        rows.lo,
        rows.hi,
        seg_lo[None],
        seg_hi[None],
        rows.m,
        np.array([prior]),
        np.zeros((1, rows.m)),
    )[0]
    params = _fit(
        rows,
        np.concatenate([theta0, np.zeros(k)]),
        rows.credit,
        rows.credit_lo,
        reg,
        prior,
        _FIT_TOL,
    )

    samples = _bootstrap(rows, params, reg, opts, rounds, seed)
    theta = np.full(n, np.nan)
    theta[rated] = params[: rows.m]
    rating = _to_rating(theta, opts)
    lower = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    coef_bounds = np.full((2, k), np.nan)
    if rounds:
        boot_theta = np.full((rounds, n), np.nan)
        boot_theta[:, rated] = samples[:, : rows.m]
        boot_rating = _to_rating(boot_theta, opts)[:, rated]
        q = [50 * alpha, 100 - 50 * alpha]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lower[rated], upper[rated] = np.nanpercentile(boot_rating, q, axis=0)
            coef_bounds = np.nanpercentile(samples[:, rows.m :], q, axis=0)
    return StyleBoard(
        rating=rating,
        lower=lower,
        upper=upper,
        rank=rank_ub(lower, upper),
        votes=votes,
        provisional=votes < min_votes,
        coef=params[rows.m :].copy(),
        coef_lower=coef_bounds[0],
        coef_upper=coef_bounds[1],
        regularised=prior > 0,
    )


def _sort_rows(
    a: Ints, b: Ints, outcome: Ints, feats: Floats, n: int, opts: _Options
) -> tuple[_Rows, Bools, Floats]:
    """Keep the votes that carry credit, orient each from its lower index, sort by pair."""
    tie_w, both_bad_w = opts.weights
    # Indexed by outcome code: A_WINS, B_WINS, TIE, BOTH_BAD.
    credit_per_outcome = np.array([1.0, 1.0, 2 * tie_w, 2 * both_bad_w])
    credit_a_per_outcome = np.array([1.0, 0.0, tie_w, both_bad_w])
    credit = credit_per_outcome[outcome]
    keep = (credit > 0) & (a != b)
    if not keep.any():
        raise ValueError("no vote carries any win credit: nothing to rate")
    kept = None if keep.all() else np.flatnonzero(keep)
    if kept is not None:
        a, b, outcome, credit = a[kept], b[kept], outcome[kept], credit[kept]
    credit_a = credit_a_per_outcome[outcome]
    swap = a > b
    lo = np.where(swap, b, a)
    hi = np.where(swap, a, b)
    credit_lo = np.where(swap, credit - credit_a, credit_a)

    rated = np.zeros(n, dtype=bool)
    rated[lo] = True
    rated[hi] = True
    votes = np.bincount(lo, minlength=n) + np.bincount(hi, minlength=n)
    local = np.cumsum(rated) - 1
    m = int(rated.sum())
    key = local[lo] * m + local[hi]
    # Small keys sort by radix in linear time.
    order = np.argsort(key.astype(np.uint16) if m * m <= 1 << 16 else key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    lengths = np.diff(np.r_[starts, key.size])
    pair_lo, pair_hi = np.divmod(key[starts], m)

    source = order if kept is None else kept[order]
    ft = np.empty((feats.shape[1], order.size))
    for f in range(feats.shape[1]):
        np.take(feats[:, f], source, out=ft[f])
        ft[f, swap[order]] *= -1.0
    credit = credit[order]
    rows = _Rows(
        ft=ft,
        credit=credit,
        credit_lo=credit_lo[order],
        unit_credit=bool(np.all(credit == 1.0)),
        starts=starts,
        lengths=lengths,
        lo=pair_lo,
        hi=pair_hi,
        m=m,
        feature_span=np.abs(ft).max(axis=1) if ft.size else np.zeros(ft.shape[0]),
        chunks=_chunks(starts, key.size),
    )
    return rows, rated, votes.astype(np.float64)


def _chunks(starts: Ints, size: int) -> list[_Chunk]:
    ends = np.r_[starts[1:], size]
    out = []
    for begin in range(0, size, _CHUNK):
        stop = min(size, begin + _CHUNK)
        first = int(np.searchsorted(starts, begin, side="right")) - 1
        last = int(np.searchsorted(starts, stop, side="left"))
        local_starts = np.maximum(starts[first:last], begin)
        local_ends = np.minimum(ends[first:last], stop)
        out.append(
            _Chunk(
                begin, stop, np.arange(first, last), local_starts - begin, local_ends - local_starts
            )
        )
    return out


def _pair_credits(rows: _Rows, credit: NDArray[Any], credit_lo: Floats) -> tuple[Floats, Floats]:
    lo = np.add.reduceat(credit_lo, rows.starts)
    return lo, np.add.reduceat(credit, rows.starts) - lo


def _evaluate(
    rows: _Rows, params: Floats, credit: NDArray[Any], credit_lo: Floats, reg: float, prior: float
) -> _Pass:
    """Gradient and Hessian of the penalised negative log-likelihood at params.

    One sweep over the rows, slice by slice: per row the logit t, the NLL's derivative
    (credit * p - credit_lo) and curvature (credit * p * (1 - p)), summed per pair for the
    strengths and against the features for the coefficients.
    """
    m, k = rows.m, rows.ft.shape[0]
    theta, beta = params[:m], params[m:]
    diff = theta[rows.lo] - theta[rows.hi]
    per_pair = np.zeros((2 + k, rows.lo.size))
    grad_beta = reg * beta
    hess_beta = reg * np.eye(k)
    weighted = not rows.unit_credit or credit is not rows.credit
    buffer = np.empty((2 + k, _CHUNK))
    for chunk in rows.chunks:
        feats = rows.ft[:, chunk.start : chunk.stop]
        sums = buffer[:, : chunk.stop - chunk.start]
        resid, curv = sums[0], sums[1]
        # p = (1 + tanh(t / 2)) / 2 is the logistic function and p (1 - p) = (1 - tanh^2) / 4:
        # tanh costs a third of scipy's expit.
        tau = np.dot(beta, feats)
        tau += np.repeat(diff[chunk.pairs], chunk.lengths)
        tau *= 0.5
        np.tanh(tau, out=tau)
        np.multiply(tau, 0.5, out=resid)
        resid += 0.5
        np.multiply(tau, tau, out=curv)
        np.subtract(1.0, curv, out=curv)
        curv *= 0.25
        if weighted:
            part = credit[chunk.start : chunk.stop]
            resid *= part
            curv *= part
        resid -= credit_lo[chunk.start : chunk.stop]
        np.multiply(feats, curv, out=sums[2:])
        per_pair[:, chunk.pairs] += np.add.reduceat(sums, chunk.starts, axis=1)
        grad_beta += feats @ resid
        hess_beta += sums[2:] @ feats.T

    grad = np.empty(m + k)
    grad[:m] = np.bincount(rows.lo, per_pair[0], m) - np.bincount(rows.hi, per_pair[0], m)
    grad[m:] = grad_beta
    hess = np.empty((m + k, m + k))
    hess[:m, :m] = _laplacian(rows.lo, rows.hi, per_pair[1], m)
    cross = np.empty((m, k))
    for f in range(k):
        cross[:, f] = np.bincount(rows.lo, per_pair[2 + f], m) - np.bincount(
            rows.hi, per_pair[2 + f], m
        )
    hess[:m, m:] = cross
    hess[m:, :m] = cross.T
    hess[m:, m:] = hess_beta
    if prior > 0:
        q = 1.0 / (1.0 + np.exp(-theta))
        grad[:m] += prior * (q - 0.5)
        hess[np.arange(m), np.arange(m)] += prior * q * (1 - q)
    return _Pass(grad, hess)


def _nll(
    rows: _Rows, params: Floats, credit: NDArray[Any], credit_lo: Floats, reg: float, prior: float
) -> float:
    m = rows.m
    theta, beta = params[:m], params[m:]
    t = np.repeat(theta[rows.lo] - theta[rows.hi], rows.lengths)
    t += beta @ rows.ft
    value = float(credit @ np.logaddexp(0.0, t) - credit_lo @ t) + 0.5 * reg * float(beta @ beta)
    if prior > 0:
        value += prior * float(np.sum(np.logaddexp(0.0, theta) - 0.5 * theta))
    return value


def _newton_step(rows: _Rows, state: _Pass, present: Bools) -> Floats:
    """Newton step with the mean of the present strengths held fixed (see bt._centred_solve).

    Contenders absent from a bootstrap round have no rows: they are left out of the system.
    """
    m = rows.m
    free = np.r_[np.flatnonzero(present), m + np.arange(state.grad.size - m)]
    hess = state.hess[np.ix_(free, free)]
    grad = state.grad[free]
    mp = int(present.sum())
    # Centre the strengths' rows and columns (P H P with P the centring projector), then add
    # J / mp to their block: mean subtractions instead of matrix products.
    system = hess.copy()
    system[:mp] -= system[:mp].mean(axis=0)
    system[:, :mp] -= system[:, :mp].mean(axis=1, keepdims=True)
    system[:mp, :mp] += 1.0 / mp
    rhs = grad.copy()
    rhs[:mp] -= rhs[:mp].mean()
    step = np.zeros(state.grad.size)
    step[free] = np.linalg.solve(system, rhs)
    return step


def _logit_change(rows: _Rows, step: Floats) -> float:
    """Bound on how far a step moves any vote's logit."""
    m = rows.m
    return float(2 * np.abs(step[:m]).max() + np.abs(step[m:]) @ rows.feature_span)


def _fit(
    rows: _Rows,
    params: Floats,
    credit: NDArray[Any],
    credit_lo: Floats,
    reg: float,
    prior: float,
    tol: float,
    present: Bools | None = None,
) -> Floats:
    """Newton's method from params until a full step moves no logit by more than tol.

    Steps that could move a logit by more than 2 * _SAFE_STEP are halved until they lower
    the objective; smaller ones keep the curvature within a factor exp(+-0.5) and are safe.
    """
    if present is None:
        present = np.ones(rows.m, dtype=bool)
    params = params.copy()
    for _ in range(_MAX_ITER):
        state = _evaluate(rows, params, credit, credit_lo, reg, prior)
        step = _newton_step(rows, state, present)
        change = _logit_change(rows, step)
        if change > 2 * _SAFE_STEP:
            value = _nll(rows, params, credit, credit_lo, reg, prior)
            scale = 1.0
            while scale > 1e-12:
                trial = params - scale * step
                if _nll(rows, trial, credit, credit_lo, reg, prior) <= value + 1e-12 * abs(value):
                    break
                scale /= 2
            params = trial
        else:
            params -= step
        params[: rows.m][present] -= params[: rows.m][present].mean()
        if change < tol:
            params[: rows.m][~present] = np.nan
            return params
    raise RuntimeError("style-control fit did not converge; please report this data set")


def _bootstrap(
    rows: _Rows, params: Floats, reg: float, opts: _Options, rounds: int, seed: int
) -> Floats:
    """Refit on multinomial resamples of the votes, warm-started; (rounds, m + k)."""
    out = np.full((rounds, params.size), np.nan)
    rng = np.random.default_rng(seed)
    size = rows.credit.size
    for r in range(rounds):
        # How often each vote is drawn: an exact multinomial resample of the votes.
        weight = np.bincount(rng.integers(0, size, size), minlength=size)
        credit = weight if rows.unit_credit else weight * rows.credit
        credit_lo = weight * rows.credit_lo
        seg_lo, seg_hi = _pair_credits(rows, credit, credit_lo)
        present = np.zeros(rows.m, dtype=bool)
        has_votes = (seg_lo + seg_hi) > 0
        present[rows.lo[has_votes]] = True
        present[rows.hi[has_votes]] = True
        # A contender that drew no vote has no strength this round (NaN, as in bt).
        local = np.cumsum(present) - 1
        lo, hi = local[rows.lo[has_votes]], local[rows.hi[has_votes]]
        graph = (seg_lo[has_votes][None], seg_hi[has_votes][None])
        exists = bool(_mle_exists(lo, hi, *graph, int(present.sum()))[0])
        prior = 0.0 if exists else opts.prior_votes
        start = params.copy()
        start[: rows.m][~present] = 0.0
        out[r] = _fit(rows, start, credit, credit_lo, reg, prior, _ROUND_TOL, present)
    return out


__all__ = [
    "STYLE_FEATURES",
    "StyleBoard",
    "markdown_counts",
    "style_control_fit",
    "style_features",
]
