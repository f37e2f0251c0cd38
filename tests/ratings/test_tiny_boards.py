"""No vote set, however small, makes a board or an interval raise: property tests over
tiny random vote sets (0..30 votes, 2..6 contenders, some never voted on) for every board
kind the leaderboard offers, in the pure math and through the database."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arena.models import Vote
from inference.models import Contender, Engine
from ratings.bt import PairTable, bt_board
from ratings.models import VoteCategory, VoteStyle
from ratings.services import leaderboard_compute
from ratings.style import style_control_fit, style_features

CHOICES = ("a", "b", "tie", "both_bad")


@st.composite
def vote_sets(draw: Any) -> tuple[int, list[tuple[int, int, int]]]:
    """(contenders, votes as (a, b, outcome)); a == b and unused contenders included."""
    n = draw(st.integers(2, 6))
    index = st.integers(0, n - 1)
    votes = draw(st.lists(st.tuples(index, index, st.integers(0, 3)), max_size=30))
    return n, votes


def _finite_or_nan(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values) | np.isnan(values)))


def _rateable(votes: list[tuple[int, int, int]]) -> bool:
    return any(a != b for a, b, _ in votes)


@settings(max_examples=150, deadline=None)
@given(vote_sets(), st.sampled_from(["sandwich", "bootstrap"]))
def test_a_bradley_terry_board_of_any_tiny_vote_set_is_finite_or_empty(
    data: tuple[int, list[tuple[int, int, int]]], ci: str
) -> None:
    n, votes = data
    if not _rateable(votes):
        return  # nothing to rate: the service shows an empty board (tested below)
    a, b, o = (np.array(x, dtype=np.int64) for x in zip(*votes, strict=True))
    board = bt_board(PairTable.from_votes(a, b, o, n), ci=ci, rounds=30)  # type: ignore[arg-type]
    for values in (board.rating, board.lower, board.upper, board.win_rate):
        assert _finite_or_nan(values)
    rated = np.isfinite(board.rating)
    assert rated.sum() >= 2
    assert np.all(board.rank >= 1)


@settings(max_examples=100, deadline=None)
@given(vote_sets(), st.integers(0, 2**16))
def test_a_style_control_board_of_any_tiny_vote_set_is_finite_or_empty(
    data: tuple[int, list[tuple[int, int, int]]], seed: int
) -> None:
    n, votes = data
    if not _rateable(votes):
        return
    rng = np.random.default_rng(seed)
    a, b, o = (np.array(x, dtype=np.int64) for x in zip(*votes, strict=True))
    counts_a = rng.integers(0, 5, size=(a.size, 4))
    counts_b = rng.integers(0, 5, size=(a.size, 4))
    board = style_control_fit(a, b, o, style_features(counts_a, counts_b), n, rounds=20, seed=seed)
    for values in (board.rating, board.lower, board.upper, board.coef):
        assert _finite_or_nan(values)
    assert np.all(np.isfinite(board.coef))


def _number_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and math.isfinite(value))


@pytest.mark.django_db
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    vote_sets(),
    st.booleans(),
    st.sampled_from(["sandwich", "bootstrap"]),
    st.sampled_from(["", "math"]),
)
def test_every_board_kind_of_any_tiny_vote_set_computes_to_numbers_or_none(
    data: tuple[int, list[tuple[int, int, int]]], style: bool, ci: str, category: str
) -> None:
    n, votes = data
    with transaction.atomic():  # each example on its own votes, rolled back after
        _board_check(n, votes, style=style, ci=ci, category=category)
        transaction.set_rollback(True)


def _board_check(
    n: int, votes: list[tuple[int, int, int]], *, style: bool, ci: str, category: str
) -> None:
    people = [Contender.objects.create(name=f"c{i}", engine=Engine.NONE) for i in range(n)]
    saved = Vote.objects.bulk_create(
        [
            Vote(
                contender_a=people[a],
                # The database refuses a contender against itself.
                contender_b=people[b if b != a else (a + 1) % n],
                choice=CHOICES[o],
                anonymous=True,
                source="arena",
                created_at=timezone.now(),
            )
            for a, b, o in votes
        ]
    )
    VoteCategory.objects.bulk_create([VoteCategory(vote=v, name="math") for v in saved[::2]])
    # Half the votes carry answer text (style counts), as after an import and new votes.
    VoteStyle.objects.bulk_create(
        [
            VoteStyle(vote=v, tokens_a=i, tokens_b=3, headers_a=0, headers_b=i % 2,
                      lists_a=1, lists_b=0, bold_a=i % 3, bold_b=0)
            for i, v in enumerate(saved[::2])
        ]
    )  # fmt: skip
    snapshot = leaderboard_compute(
        category=category,
        style_control=style,
        ci=ci,  # type: ignore[arg-type]
        rounds=20,
        trend=True,
        save=False,
    )
    for row in snapshot.rows:
        for field in ("rating", "lower", "upper", "win_rate"):
            assert _number_or_none(row[field]), (field, row)
    matrices = snapshot.extra.get("matrices") or {}
    for key in ("observed", "expected"):
        assert all(_number_or_none(x) for line in matrices.get(key, []) for x in line)
    trend = snapshot.extra.get("trend") or {}
    assert all(_number_or_none(x) for line in (trend.get("ratings") or {}).values() for x in line)
