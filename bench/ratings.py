"""Benchmark: the rating math in ``ratings`` against FastChat's methods, side by side.

Run from the project root:

    .venv/bin/python bench/ratings.py [--quick] [--baseline-rounds N]

For 100 contenders and 10k, 100k, 1M and 10M synthetic votes (--quick stops at 1M) it times
and measures the peak memory of each step: aggregating per-vote arrays into the pair table,
the Bradley-Terry fit, the fit with 100 bootstrap rounds, the fit with sandwich intervals,
and style control with 100 bootstrap rounds. Up to 1M votes it also runs re-implementations
of FastChat's methods (see the "FastChat baselines" section): their bootstrap rounds are
limited, measured, and extrapolated to 100, and the output says which figures are which.
Last, the full board with sandwich intervals for the real 135k LMArena votes.

Memory is the peak resident set size during a step minus the resident size before it (Linux
VmHWM, reset through /proc/self/clear_refs); where that reset is not allowed it falls back to
tracemalloc's peak of traced allocations, and says so.
"""

from __future__ import annotations

import argparse
import csv
import gc
import gzip
import math
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The machine is shared: OpenBLAS threads that spin while another process holds the other
# core slow the small dense solves down several times. One BLAS thread unless told otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Python put this script's folder first on sys.path, where "ratings" is this very file:
# point it at the project root so that "ratings" is the package.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import expit  # noqa: E402

from ratings.bt import (  # noqa: E402
    A_WINS,
    B_WINS,
    BOTH_BAD,
    TIE,
    PairTable,
    bt_board,
    bt_fit,
)
from ratings.style import style_control_fit, style_features  # noqa: E402

CONTENDERS = 100
SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
BASELINE_SIZES = (10_000, 100_000, 1_000_000)
BASELINE_ROUNDS = {10_000: 20, 100_000: 5, 1_000_000: 2}
ROUNDS = 100
TRUE_COEF = np.array([0.25, 0.05, 0.08, 0.1])
REAL_VOTES = Path(__file__).resolve().parent.parent / "data" / "arena_hp140k_votes.csv.gz"
TARGETS = {
    "bt_boot_1m_s": 0.3,
    "style_1m_s": 10.0,
    "peak_10m_mb": 1024.0,
}


# --- measuring ---------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


USE_RSS = _reset_peak_rss()
MEMORY_METHOD = (
    "peak RSS increase (VmHWM reset via /proc/self/clear_refs)"
    if USE_RSS
    else "tracemalloc peak of traced allocations (RSS peak reset not permitted)"
)


@dataclass
class Measure:
    seconds: float
    peak_mb: float


def measure(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Measure]:
    """Run fn once; print and return its wall time and peak memory."""
    gc.collect()
    if USE_RSS:
        before = _status_kb("VmRSS")
        _reset_peak_rss()
    else:
        tracemalloc.start()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    if USE_RSS:
        peak_mb = (_status_kb("VmHWM") - before) / 1024
    else:
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    print(f"    {label:<58} {seconds:9.3f} s {peak_mb:9.1f} MB", flush=True)
    return result, Measure(seconds, peak_mb)


def say(text: str) -> None:
    print(text, flush=True)


# --- synthetic votes ---------------------------------------------------------------------


@dataclass
class Votes:
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    counts_a: np.ndarray | None
    counts_b: np.ndarray | None


def synthetic_votes(size: int, seed: int, with_style: bool) -> Votes:
    """Votes among 100 contenders, ties and both-bad about as common as on LMArena (16% and
    12%), decisive odds set so that the expected score is the (contextual) BT probability."""
    rng = np.random.default_rng(seed)
    strengths = rng.normal(0.0, 0.5, CONTENDERS)
    a = rng.integers(0, CONTENDERS, size)
    b = (a + rng.integers(1, CONTENDERS, size)) % CONTENDERS
    logit = strengths[a] - strengths[b]
    counts_a = counts_b = None
    if with_style:
        counts_a, counts_b = _answer_counts(rng, size), _answer_counts(rng, size)
        logit += style_features(counts_a, counts_b) @ TRUE_COEF
    p = expit(logit)
    del logit
    drawn = 0.28 * np.minimum(1.0, 2 * np.minimum(p, 1 - p))
    u = rng.random(size)
    outcome = np.where(
        u < drawn * 0.57,
        TIE,
        np.where(
            u < drawn,
            BOTH_BAD,
            np.where(rng.random(size) < (p - drawn / 2) / (1 - drawn), A_WINS, B_WINS),
        ),
    ).astype(np.int8)
    return Votes(a, b, outcome, counts_a, counts_b)


def _answer_counts(rng: np.random.Generator, size: int) -> np.ndarray:
    length = rng.gamma(2.0, 300.0, size)
    markdown = rng.poisson(np.outer(length / 600, [1.0, 5.0, 3.0]))
    return np.column_stack([np.round(length), markdown]).astype(np.float64)


# --- FastChat baselines --------------------------------------------------------------------
# Faithful re-implementations, without pandas or sklearn, of
#  * compute_mle_elo (the LMSYS notebook / elo_analysis.py): one logistic row per vote, every
#    vote duplicated so that a tie becomes one row won by each side, fitted from zero by
#    L-BFGS (sklearn's lbfgs settings: tol 1e-6, 100 iterations); its bootstrap resamples
#    the votes and refits. Index arrays stand in for sklearn's dense X, which would need
#    1.6 GB at 1M votes, so this baseline is lighter than the original.
#  * rating_systems.compute_bt / compute_bootstrap_bt (current FastChat): np.unique over
#    (a, b, outcome), L-BFGS-B (gtol 1e-6, 100 iterations) with np.add.at gradients,
#    multinomial weights per round, each round refitted from zero (run here in one process;
#    FastChat spreads rounds over a multiprocessing pool).
#  * rating_systems.compute_style_control / compute_bootstrap_style_control: per-vote rows,
#    L2 penalty 0.5 on every parameter, the same L-BFGS-B, resampled vote indices per round.

ALPHA = math.log(10.0)
DIFF_MASK = np.array([1.0, -1.0])


def fastchat_rows_fit(a: np.ndarray, b: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    size = a.size
    rows = np.column_stack([np.r_[a, a], np.r_[b, b]])
    won = np.zeros(2 * size)
    won[:size][outcome == A_WINS] = 1.0
    won[size:][outcome == A_WINS] = 1.0
    won[:size][outcome >= TIE] = 1.0  # one tie => one A win + one B win

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        logits = ALPHA * (w[rows[:, 0]] - w[rows[:, 1]])
        probs = expit(logits)
        loss = -(np.log(probs) * won + np.log(1.0 - probs) * (1.0 - won)).sum()
        grads = -ALPHA * (won - probs)
        grad = np.zeros_like(w)
        np.add.at(grad, rows, grads[:, None] * DIFF_MASK)
        return float(loss), grad

    result = minimize(
        loss_and_grad,
        np.zeros(CONTENDERS),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 100, "gtol": 1e-6},
    )
    return 400.0 * result.x + 1000.0


def fastchat_rows_bootstrap(votes: Votes, rounds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rounds):
        idx = rng.integers(0, votes.a.size, votes.a.size)
        out.append(fastchat_rows_fit(votes.a[idx], votes.b[idx], votes.outcome[idx]))
    return np.array(out)


def _fastchat_bt_loss_and_grad(
    ratings: np.ndarray, matchups: np.ndarray, outcomes: np.ndarray, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    matchup_ratings = ratings[matchups]
    logits = ALPHA * (matchup_ratings[:, 0] - matchup_ratings[:, 1])
    probs = expit(logits)
    loss = -((np.log(probs) * outcomes + np.log(1.0 - probs) * (1.0 - outcomes)) * weights).sum()
    matchups_grads = -ALPHA * (outcomes - probs) * weights
    model_grad = np.zeros_like(ratings)
    np.add.at(model_grad, matchups[:, [0, 1]], matchups_grads[:, None] * DIFF_MASK)
    return float(loss), model_grad


def _fastchat_fit_bt(matchups: np.ndarray, outcomes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    result = minimize(
        _fastchat_bt_loss_and_grad,
        np.zeros(CONTENDERS),
        args=(matchups, outcomes, weights),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 100, "gtol": 1e-6},
    )
    return result.x


def fastchat_agg_preprocess(votes: Votes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    schedule = np.full((votes.a.size, 3), 1, dtype=np.int32)
    schedule[:, 0] = votes.a
    schedule[:, 1] = votes.b
    schedule[votes.outcome == A_WINS, 2] = 2
    schedule[votes.outcome == B_WINS, 2] = 0
    matchups_outcomes, counts = np.unique(schedule, return_counts=True, axis=0)
    matchups = matchups_outcomes[:, [0, 1]]
    outcomes = matchups_outcomes[:, 2].astype(np.float64) / 2.0
    return matchups, outcomes, counts.astype(np.float64)


def fastchat_agg_fit(matchups: np.ndarray, outcomes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return 400.0 * _fastchat_fit_bt(matchups, outcomes, weights) + 1000.0


def fastchat_agg_bootstrap(
    matchups: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, rounds: int, seed: int
) -> np.ndarray:
    total = int(weights.sum())
    rng = np.random.default_rng(seed)
    boot = rng.multinomial(total, weights / weights.sum(), size=rounds) / total
    return np.array([fastchat_agg_fit(matchups, outcomes, w) for w in boot])


def _fastchat_contextual_loss_and_grad(
    params: np.ndarray,
    matchups: np.ndarray,
    features: np.ndarray,
    outcomes: np.ndarray,
    reg: float = 0.5,
) -> tuple[float, np.ndarray]:
    reg_loss = reg / 2.0 * np.inner(params, params)
    ratings = params[:CONTENDERS]
    feature_params = params[CONTENDERS:]
    matchup_ratings = ratings[matchups]
    bt_logits = ALPHA * (matchup_ratings[:, 0] - matchup_ratings[:, 1])
    context_logits = np.dot(features, feature_params)
    probs = expit(bt_logits + context_logits)
    loss = -(np.log(probs) * outcomes + np.log(1.0 - probs) * (1.0 - outcomes)).sum() + reg_loss
    error = outcomes - probs
    grad = reg * params
    matchups_grads = -ALPHA * error
    np.add.at(grad[:CONTENDERS], matchups[:, [0, 1]], matchups_grads[:, None] * DIFF_MASK)
    grad[CONTENDERS:] -= np.dot(features.T, error)
    return float(loss), grad


def fastchat_style_fit(
    matchups: np.ndarray, features: np.ndarray, outcomes: np.ndarray, idxs: np.ndarray | None
) -> np.ndarray:
    if idxs is not None:
        matchups, features, outcomes = matchups[idxs], features[idxs], outcomes[idxs]
    result = minimize(
        _fastchat_contextual_loss_and_grad,
        np.zeros(CONTENDERS + features.shape[1]),
        args=(matchups, features, outcomes),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 100, "gtol": 1e-6},
    )
    return result.x


def fastchat_style_bootstrap(
    matchups: np.ndarray, features: np.ndarray, outcomes: np.ndarray, rounds: int, seed: int
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = outcomes.size
    return np.array(
        [
            fastchat_style_fit(matchups, features, outcomes, rng.integers(0, size, size))
            for _ in range(rounds)
        ]
    )


# --- the benchmark -----------------------------------------------------------------------


@dataclass
class Row:
    size: int
    step: str
    ours: Measure | None
    baseline_s: float | None = None
    baseline_note: str = ""
    target: str = ""


def bench_sql_aggregation() -> None:
    """The PostgreSQL GROUP BY that feeds PairTable in production, at 1M votes, and the
    whole board on the 135k real votes with the aggregation included (bench/leaderboard_sql.py,
    which makes and drops its own scratch database)."""
    import shutil
    import subprocess

    ready = (
        shutil.which("pg_isready")
        and subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False
        ).returncode
        == 0
    )
    if not ready:
        say("  SQL aggregation: skipped (no PostgreSQL on 127.0.0.1:5432)")
        return
    say("  SQL aggregation on PostgreSQL (bench/leaderboard_sql.py):")
    script = Path(__file__).resolve().parent / "leaderboard_sql.py"
    subprocess.run([sys.executable, str(script), "--votes", "1000000"], check=True)


def bench_size(size: int, args: argparse.Namespace, rows: list[Row]) -> None:
    say(f"\n== {size:,} votes, {CONTENDERS} contenders ==")
    run_style = size <= 1_000_000
    votes, _ = measure(
        "generate synthetic votes (not a rating step)", synthetic_votes, size, size, run_style
    )
    table, agg = measure(
        "aggregate per-vote arrays -> PairTable (numpy)",
        PairTable.from_votes,
        votes.a,
        votes.b,
        votes.outcome,
        CONTENDERS,
    )
    rows.append(Row(size, "aggregate votes -> pair table", agg))
    ratings, fit = measure("BT fit (maximum likelihood, Newton)", bt_fit, table)
    rows.append(Row(size, "BT fit", fit))
    _, boot = measure(
        f"BT fit + {ROUNDS}-round bootstrap board", bt_board, table, ci="bootstrap", rounds=ROUNDS
    )
    rows.append(
        Row(
            size,
            f"BT fit + {ROUNDS} bootstrap rounds",
            boot,
            target=f"< {TARGETS['bt_boot_1m_s']} s" if size == 1_000_000 else "",
        )
    )
    _, sandwich = measure("BT fit + sandwich intervals board", bt_board, table, ci="sandwich")
    rows.append(Row(size, "BT fit + sandwich intervals", sandwich))

    if run_style:
        assert votes.counts_a is not None and votes.counts_b is not None
        features, feat = measure(
            "style features (4 columns, z-scored)", style_features, votes.counts_a, votes.counts_b
        )
        rows.append(Row(size, "style features", feat))
        style, sty = measure(
            f"style control + {ROUNDS}-round bootstrap",
            style_control_fit,
            votes.a,
            votes.b,
            votes.outcome,
            features,
            CONTENDERS,
            rounds=ROUNDS,
        )
        say(f"      coefficients {np.round(style.coef, 3)} (simulated with {TRUE_COEF})")
        rows.append(
            Row(
                size,
                f"style control + {ROUNDS} bootstrap rounds",
                sty,
                target=f"< {TARGETS['style_1m_s']:.0f} s" if size == 1_000_000 else "",
            )
        )
    else:
        say(
            f"    style control: skipped at {size:,} votes: per-vote rows need about 2 GB "
            "(features, credits and working arrays) and ~10x the 1M time; the rating path "
            "above aggregates and is what scales"
        )

    if size in BASELINE_SIZES:
        bench_baselines(size, votes, table, ratings, args, rows, features if run_style else None)
    if size == 10_000_000:
        peak = max(r.ours.peak_mb for r in rows if r.size == size and r.ours)
        verdict = "met" if peak < TARGETS["peak_10m_mb"] else "MISSED"
        say(
            f"    peak memory of any rating step at 10M votes: {peak:.0f} MB "
            f"(target < {TARGETS['peak_10m_mb']:.0f} MB: {verdict})"
        )


def bench_baselines(
    size: int,
    votes: Votes,
    table: PairTable,
    ratings: np.ndarray,
    args: argparse.Namespace,
    rows: list[Row],
    features: np.ndarray | None,
) -> None:
    rounds = args.baseline_rounds or BASELINE_ROUNDS[size]
    scale = ROUNDS / rounds
    say(
        f"  -- FastChat baselines (bootstrap: {rounds} rounds measured, x{scale:g} "
        f"extrapolated to {ROUNDS}) --"
    )
    ours_bt = sum(
        r.ours.seconds
        for r in rows
        if r.size == size
        and r.ours
        and r.step in ("aggregate votes -> pair table", f"BT fit + {ROUNDS} bootstrap rounds")
    )

    base_fit, m_fit = measure(
        "compute_mle_elo per-vote rows: fit", fastchat_rows_fit, votes.a, votes.b, votes.outcome
    )
    say(f"      max |rating difference| vs ours: {np.abs(base_fit - ratings).max():.4f} points")
    _, m_boot = measure(
        f"compute_mle_elo per-vote rows: {rounds} bootstrap rounds",
        fastchat_rows_bootstrap,
        votes,
        rounds,
        0,
    )
    total = m_fit.seconds + m_boot.seconds * scale
    rows.append(
        Row(
            size,
            f"BT fit + {ROUNDS} bootstrap rounds",
            None,
            total,
            f"FastChat compute_mle_elo (fit measured, {rounds} rounds measured, rest "
            f"extrapolated) vs ours incl. aggregation {ours_bt:.3f} s",
        )
    )

    (matchups, outcomes, weights), m_pre = measure(
        "compute_bt aggregated: np.unique preprocessing", fastchat_agg_preprocess, votes
    )
    agg_ratings, m_afit = measure(
        "compute_bt aggregated: fit", fastchat_agg_fit, matchups, outcomes, weights
    )
    say(f"      max |rating difference| vs ours: {np.abs(agg_ratings - ratings).max():.4f} points")
    _, m_aboot = measure(
        f"compute_bootstrap_bt aggregated: {rounds} bootstrap rounds",
        fastchat_agg_bootstrap,
        matchups,
        outcomes,
        weights,
        rounds,
        0,
    )
    total_agg = m_pre.seconds + m_afit.seconds + m_aboot.seconds * scale
    rows.append(
        Row(
            size,
            f"BT fit + {ROUNDS} bootstrap rounds",
            None,
            total_agg,
            f"FastChat compute_bt + compute_bootstrap_bt in one process (preprocessing and fit "
            f"measured, {rounds} rounds measured, rest extrapolated) vs ours incl. aggregation "
            f"{ours_bt:.3f} s",
        )
    )

    if features is not None:
        matchups = np.column_stack([votes.a, votes.b])
        outcomes = np.where(
            votes.outcome == A_WINS, 1.0, np.where(votes.outcome == B_WINS, 0.0, 0.5)
        )
        params, m_sfit = measure(
            "style control per-vote rows: fit",
            fastchat_style_fit,
            matchups,
            features,
            outcomes,
            None,
        )
        say(f"      coefficients {np.round(params[CONTENDERS:], 3)}")
        _, m_sboot = measure(
            f"style control per-vote rows: {rounds} bootstrap rounds",
            fastchat_style_bootstrap,
            matchups,
            features,
            outcomes,
            rounds,
            0,
        )
        ours_style = next(
            r.ours.seconds
            for r in rows
            if r.size == size and r.ours and r.step.startswith("style control")
        )
        rows.append(
            Row(
                size,
                f"style control + {ROUNDS} bootstrap rounds",
                None,
                m_sfit.seconds + m_sboot.seconds * scale,
                f"FastChat compute_bootstrap_style_control, {rounds} rounds measured, "
                f"extrapolated, vs ours {ours_style:.3f} s",
            )
        )


def bench_real_votes() -> None:
    say(f"\n== real votes: {REAL_VOTES.name} ==")

    def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        names: dict[str, int] = {}
        code = {"model_a": A_WINS, "model_b": B_WINS, "tie": TIE, "both_bad": BOTH_BAD}
        a, b, outcome = [], [], []
        with gzip.open(REAL_VOTES, "rt", newline="") as f:
            for row in csv.DictReader(f):
                a.append(names.setdefault(row["model_a"], len(names)))
                b.append(names.setdefault(row["model_b"], len(names)))
                outcome.append(code[row["winner"]])
        return np.array(a), np.array(b), np.array(outcome), list(names)

    (a, b, outcome, names), _ = measure("read the CSV (csv + gzip, not a rating step)", load)
    table, _ = measure("aggregate -> PairTable", PairTable.from_votes, a, b, outcome, len(names))
    board, _ = measure("full board, sandwich intervals", bt_board, table, ci="sandwich")
    say(f"    {a.size:,} votes, {len(names)} models; regularised: {board.regularised}")
    say(
        f"    {'rank':>4}  {'model':<48} {'rating':>7}  {'95% interval':>17}  {'votes':>6}  "
        "win rate"
    )
    for i in board.order():
        flag = "  (provisional)" if board.provisional[i] else ""
        say(
            f"    {board.rank[i]:>4}  {names[i]:<48} {board.rating[i]:7.1f}  "
            f"[{board.lower[i]:7.1f}, {board.upper[i]:7.1f}]  {board.votes[i]:6.0f}  "
            f"{board.win_rate[i]:7.1%}{flag}"
        )


def print_summary(rows: list[Row]) -> None:
    say("\n== summary (ours: measured; baseline: as noted) ==")
    say(
        f"{'votes':>11}  {'step':<36} {'ours s':>9} {'peak MB':>8} {'baseline s':>11} "
        f"{'ratio':>8}  target / note"
    )
    by_key: dict[tuple[int, str], Row] = {}
    for row in rows:
        if row.ours is not None:
            by_key[(row.size, row.step)] = row
    for row in rows:
        if row.ours is not None:
            verdict = ""
            if row.target:
                limit = float(row.target.split()[1])
                verdict = f"{row.target}: {'met' if row.ours.seconds < limit else 'MISSED'}"
            say(
                f"{row.size:>11,}  {row.step:<36} {row.ours.seconds:9.3f} "
                f"{row.ours.peak_mb:8.1f} {'':>11} {'':>8}  {verdict}"
            )
        else:
            ours = by_key[(row.size, row.step)].ours
            assert ours is not None and row.baseline_s is not None
            ours_s = ours.seconds
            if "incl. aggregation" in row.baseline_note:
                ours_s += by_key[(row.size, "aggregate votes -> pair table")].ours.seconds  # type: ignore[union-attr]
            say(
                f"{row.size:>11,}  {'  baseline: ' + row.step:<36} {'':>9} {'':>8} "
                f"{row.baseline_s:11.2f} {row.baseline_s / ours_s:7.0f}x  {row.baseline_note}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="stop at 1M votes")
    parser.add_argument(
        "--baseline-rounds",
        type=int,
        default=0,
        help="bootstrap rounds to measure for each FastChat baseline "
        "(default: 20 at 10k, 5 at 100k, 2 at 1M)",
    )
    args = parser.parse_args()
    say("rating math benchmark")
    say(f"  memory: {MEMORY_METHOD}")
    say(
        f"  BLAS threads: OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; "
        f"cores: {os.cpu_count()}; numpy {np.__version__}"
    )
    bench_sql_aggregation()
    rows: list[Row] = []
    # Warm-up: first calls pay for imports and page faults that a server pays once.
    bt_board(PairTable.from_votes([0, 1], [1, 0], [A_WINS, A_WINS], 2), ci="bootstrap", rounds=2)
    for size in SIZES:
        if args.quick and size > 1_000_000:
            break
        bench_size(size, args, rows)
    bench_real_votes()
    print_summary(rows)


if __name__ == "__main__":
    main()
