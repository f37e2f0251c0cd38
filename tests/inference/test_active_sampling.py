"""Active pair sampling (arena/sampling.py, on top of the admin weights):
pairs whose comparison is least certain come first, so intervals shrink with
fewer votes and new contenders leave provisional status quickly."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from arena import services
from arena.models import Vote
from arena.sampling import (
    PairRecord,
    pair_gain,
    pair_probabilities,
    pair_sample,
    pair_sample_active,
)
from inference.models import Contender
from inference.selectors import pair_vote_records, pair_vote_records_forget
from ratings.bt import A_WINS, B_WINS, PairTable, bt_board
from ratings.models import FlaggedVoter
from ratings.selectors import VoteFilter, pair_counts_get

Records = dict[tuple[int, int], PairRecord]


def test_an_unseen_or_close_pair_has_more_to_learn() -> None:
    assert pair_gain(PairRecord()) > pair_gain(PairRecord(votes=10, score_first=5))
    assert pair_gain(PairRecord(votes=10, score_first=5)) > pair_gain(PairRecord(100, 50))
    # Same number of votes: an even pair is less certain than a lopsided one.
    assert pair_gain(PairRecord(40, 20)) > pair_gain(PairRecord(40, 38))


def test_the_chances_add_up_and_respect_weights_and_exploration() -> None:
    records = {(0, 1): PairRecord(500, 250)}
    chances = pair_probabilities([1.0, 1.0, 0.0, 1.0], records, explore=0.2)
    assert set(chances) == {(0, 1), (0, 3), (1, 3)}  # a zero weight is never drawn
    assert sum(chances.values()) == pytest.approx(1.0)
    assert chances[(0, 1)] >= 0.2 / 3  # exploration: no pair starves
    assert chances[(0, 3)] > 5 * chances[(0, 1)]  # the well-measured pair waits
    rng = random.Random(0)
    assert {pair_sample_active([1.0, 1.0], {}, rng)[0] for _ in range(50)} == {0, 1}


def _simulate(
    active: bool, ratings: list[float], battles: int, seed: int, history: Records | None = None
) -> tuple[list[tuple[int, int, int]], Records]:
    """Battles with outcomes drawn from true Bradley-Terry ratings."""
    rng = random.Random(seed)
    records: Records = dict(history or {})
    votes = []
    weights = [1.0] * len(ratings)
    for _ in range(battles):
        i, j = pair_sample_active(weights, records, rng) if active else pair_sample(weights, rng)
        a_wins = rng.random() < 1 / (1 + 10 ** ((ratings[j] - ratings[i]) / 400))
        votes.append((i, j, A_WINS if a_wins else B_WINS))
        low, high = sorted((i, j))
        old = records.get((low, high), PairRecord())
        low_won = a_wins == (i == low)
        records[(low, high)] = PairRecord(old.votes + 1, old.score_first + low_won)
    return votes, records


def _history(ratings: list[float], old: int, per_pair: int, seed: int) -> tuple[list, Records]:
    rng = random.Random(seed)
    votes, records = [], {}
    for i in range(old):
        for j in range(i + 1, old):
            wins = 0
            for _ in range(per_pair):
                won = rng.random() < 1 / (1 + 10 ** ((ratings[j] - ratings[i]) / 400))
                votes.append((i, j, A_WINS if won else B_WINS))
                wins += won
            records[(i, j)] = PairRecord(per_pair, wins)
    return votes, records


def _mean_interval(votes: list[tuple[int, int, int]], n: int) -> float:
    a, b, outcome = (np.array(column) for column in zip(*votes, strict=True))
    board = bt_board(PairTable.from_votes(a, b, outcome, n), ci="sandwich")
    return float(np.mean(board.upper - board.lower))


def test_intervals_shrink_with_fewer_votes_than_weighted_sampling() -> None:
    # Four contenders with a long history, four new ones: the same 600 new
    # votes leave narrower intervals when they go where the doubt is.
    ratings = [900.0, 1000.0, 1100.0, 1200.0, 950.0, 1050.0, 1150.0, 1250.0]
    widths: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(4):
        old_votes, history = _history(ratings, old=4, per_pair=150, seed=100 + seed)
        for active in (True, False):
            new_votes, _ = _simulate(active, ratings, 600, seed, history)
            widths[active].append(_mean_interval(old_votes + new_votes, len(ratings)))
    narrow, wide = float(np.mean(widths[True])), float(np.mean(widths[False]))
    print(f"mean 95% interval: active {narrow:.1f}, weighted {wide:.1f} points")
    assert narrow < 0.96 * wide


def test_a_new_contender_leaves_provisional_status_quickly() -> None:
    ratings = [1000.0, 1050.0, 1100.0, 1150.0, 1200.0, 1250.0, 1100.0]
    _, history = _history(ratings, old=6, per_pair=100, seed=1)

    def battles_until_50_votes(active: bool, seed: int) -> int:
        for n in range(50, 1000, 10):
            _, records = _simulate(active, ratings, n, seed, history)
            if sum(r.votes for (i, j), r in records.items() if 6 in (i, j)) >= 50:
                return n
        return 1000

    active = [battles_until_50_votes(True, s) for s in range(3)]
    weighted = [battles_until_50_votes(False, s) for s in range(3)]
    print(f"battles until the newcomer has 50 votes: active {active}, weighted {weighted}")
    assert sum(active) < 0.5 * sum(weighted)


@pytest.mark.django_db
def test_battle_create_sends_a_new_contender_into_battles(alice: str, settings: object) -> None:
    settings.ARENA_SAMPLING_CACHE_SECONDS = 0  # type: ignore[attr-defined]
    old = [Contender.objects.create(name=f"old-{i}") for i in range(3)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        Vote.objects.bulk_create(
            Vote(contender_a=old[a], contender_b=old[b], choice="tie", anonymous=True)
            for _ in range(200)
        )
    Contender.objects.create(name="newcomer")
    pair_vote_records_forget()
    records = pair_vote_records(max_age=0)
    assert records[(old[0].pk, old[1].pk)] == (200, 100.0)

    def share(mode: str) -> float:
        settings.ARENA_SAMPLING = mode  # type: ignore[attr-defined]
        drawn: Counter[str] = Counter()
        for seed in range(200):
            battle = services.battle_create(session_key=alice, rng=random.Random(seed))
            drawn.update([battle.contender_a.name, battle.contender_b.name])
        return drawn["newcomer"] / 200

    weighted, active = share("weighted"), share("active")
    assert weighted == pytest.approx(0.5, abs=0.1)  # in half the pairs
    assert active > 0.8


@pytest.mark.django_db
def test_sampling_counts_only_the_votes_the_leaderboard_counts() -> None:
    a, b = (Contender.objects.create(name=n) for n in ("left", "right"))

    def votes(n: int, **kw: object) -> None:
        Vote.objects.bulk_create(
            Vote(contender_a=a, contender_b=b, choice="a", **{"anonymous": True, **kw})
            for _ in range(n)
        )

    votes(10, session_key="fair")
    votes(20, session_key="fair", anonymous=False)  # named mode
    votes(30, session_key="fair", over_cap=True)
    votes(40, session_key="fair", identity_leak=True)
    votes(50, session_key="outlier")
    votes(60, session_key="fair", ip_key="net1")
    FlaggedVoter.objects.create(session_key="outlier", votes=50, p_value=1e-9)
    FlaggedVoter.objects.create(session_key="ip:net1", votes=60, p_value=1e-9)
    pair_vote_records_forget()
    assert pair_vote_records(max_age=0) == {(a.pk, b.pk): (10, 10.0)}
    assert pair_counts_get(VoteFilter()).table.count.sum() == 10
