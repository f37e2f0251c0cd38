"""The leaderboard from the database: SQL aggregation, snapshots, pages, API."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from arena.models import Vote
from inference.models import Contender, Engine
from ratings.bt import PairTable, bt_board
from ratings.models import Snapshot, VoteCategory
from ratings.selectors import OUTCOME, VoteFilter, pair_counts_get
from ratings.services import leaderboard_compute

pytestmark = pytest.mark.django_db
STRENGTH = {"strong": 1.0, "middle": 0.0, "weak": -1.0}


@pytest.fixture
def votes() -> list[Vote]:
    """600 votes between three contenders of known strength, a tenth tagged math."""
    rng = random.Random(5)
    contenders = {n: Contender.objects.create(name=n, engine=Engine.NONE) for n in STRENGTH}
    names = list(STRENGTH)
    rows = []
    for i in range(600):
        a, b = rng.sample(names, 2)
        p = 1 / (1 + 10 ** ((STRENGTH[b] - STRENGTH[a]) * 100 / 400))
        r = rng.random()
        choice = "tie" if r < 0.1 else ("a" if r < 0.1 + 0.9 * p else "b")
        rows.append(
            Vote(
                contender_a=contenders[a],
                contender_b=contenders[b],
                choice=choice,
                anonymous=True,
                source="synthetic",
                external_id=str(i),
                created_at=timezone.now(),
            )
        )
    created = Vote.objects.bulk_create(rows)
    VoteCategory.objects.bulk_create([VoteCategory(vote=v, name="math") for v in created[::10]])
    return created


def test_sql_aggregation_matches_counting_votes_in_python(votes: list[Vote]) -> None:
    agg = pair_counts_get(VoteFilter())
    index = {n: i for i, n in enumerate(agg.names)}
    by_python = PairTable.from_votes(
        [index[v.contender_a.name] for v in votes],
        [index[v.contender_b.name] for v in votes],
        [OUTCOME[v.choice] for v in votes],
        len(index),
    )
    board_sql = bt_board(agg.table)
    board_py = bt_board(by_python)
    assert board_sql.rating.tolist() == pytest.approx(board_py.rating.tolist(), abs=1e-9)
    assert agg.table.count.sum() == 600


def test_the_board_orders_contenders_by_their_true_strength(votes: object) -> None:
    snapshot = leaderboard_compute()
    assert [r["name"] for r in snapshot.rows] == ["strong", "middle", "weak"]
    assert all(r["lower"] < r["rating"] < r["upper"] for r in snapshot.rows)
    assert sum(r["rating"] for r in snapshot.rows) / 3 == pytest.approx(1000, abs=0.01)
    assert snapshot.votes == 600 and Snapshot.objects.count() == 1


def test_flagged_and_named_votes_are_left_out_by_default(votes: list[Vote]) -> None:
    Vote.objects.filter(pk__in=[v.pk for v in votes[:100]]).update(identity_leak=True)
    Vote.objects.filter(pk__in=[v.pk for v in votes[100:150]]).update(anonymous=False)
    assert leaderboard_compute(save=False).votes == 450
    everything = VoteFilter(include_flagged=True, include_named=True)
    assert leaderboard_compute(vote_filter=everything, save=False).votes == 600


def test_compute_leaderboard_prints_json(votes: object) -> None:
    out = io.StringIO()
    call_command(
        "compute_leaderboard", "--json", "--ci", "bootstrap", "--category", "math", stdout=out
    )
    rows = json.loads(out.getvalue())
    assert {r["name"] for r in rows} == set(STRENGTH)
    assert {"name", "rating", "lower", "upper", "votes", "rank"} <= set(rows[0])
    assert sum(r["votes"] for r in rows) == 2 * 60


def test_the_page_shows_scores_intervals_and_charts(votes: object) -> None:
    body = Client().get("/leaderboard/").content.decode()
    assert body.index(">strong<") < body.index(">middle<") < body.index(">weak<")
    assert '<svg class="ci-chart"' in body and '<svg class="heat-map"' in body
    math_page = Client().get("/leaderboard/?category=math").content.decode()
    assert "60 votes" in math_page


def test_json_and_csv_endpoints(votes: object) -> None:
    data = Client().get("/leaderboard/leaderboard.json?ci=bootstrap").json()
    assert data["ci"] == "bootstrap" and data["votes"] == 600
    assert data["rows"][0]["name"] == "strong"
    text = Client().get("/leaderboard/leaderboard.csv").content.decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in rows] == ["strong", "middle", "weak"]


def test_the_contender_page_has_its_pairwise_record(votes: object) -> None:
    response = Client().get("/leaderboard/contender/strong/")
    assert response.status_code == 200
    body = response.content.decode()
    assert ">middle<" in body and ">weak<" in body
    assert '<svg class="trend"' in body
    assert Client().get("/leaderboard/contender/nobody/").status_code == 404


def test_an_unknown_category_is_a_404(votes: object) -> None:
    assert Client().get("/leaderboard/?category=cooking").status_code == 404


def test_no_votes_is_an_empty_board_not_an_error() -> None:
    response = Client().get("/leaderboard/")
    assert response.status_code == 200
    assert 'id="empty"' in response.content.decode()
