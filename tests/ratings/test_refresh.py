"""Snapshots are recomputed by a task after every N votes and on a schedule:
one refresh at a time, on its own queue, triggered without counting votes,
old snapshots pruned."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from arena.celery import app
from arena.models import Vote
from inference.models import Contender, Engine
from ratings.cache import lock_held, store
from ratings.models import Snapshot, VoteCategory
from ratings.services import (
    REFRESH_LOCK,
    VOTES_SINCE_REFRESH,
    snapshots_prune,
    snapshots_refresh,
)
from ratings.tasks import leaderboard_refresh_maybe

pytestmark = pytest.mark.django_db(transaction=True)


def _votes(n: int) -> None:
    x = Contender.objects.create(name="x", engine=Engine.NONE)
    y = Contender.objects.create(name="y", engine=Engine.NONE)
    z = Contender.objects.create(name="z", engine=Engine.NONE)
    pairs = [(x, y), (y, z), (z, x)]
    saved = Vote.objects.bulk_create(
        [
            Vote(contender_a=pairs[i % 3][0], contender_b=pairs[i % 3][1],
                 choice="a" if i % 3 else "b", anonymous=True, created_at=timezone.now())
            for i in range(n)
        ]
    )  # fmt: skip
    VoteCategory.objects.bulk_create([VoteCategory(vote=v, name="math") for v in saved[::2]])


def _wait_for_snapshots(timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count := Snapshot.objects.count():  # a refresh saves its boards at once
            return count
        time.sleep(0.3)
    return 0


def test_every_nth_vote_refreshes_the_snapshots_without_counting_votes(
    settings: object, generation: None
) -> None:
    settings.ARENA_LEADERBOARD_EVERY_VOTES = 10  # type: ignore[attr-defined]
    store().set(VOTES_SINCE_REFRESH, 0, ttl=None)
    _votes(10)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(9):
            leaderboard_refresh_maybe()
    assert queries.captured_queries == []  # a counter in Redis or this process, no COUNT(*)
    time.sleep(1)
    assert Snapshot.objects.count() == 0
    with CaptureQueriesContext(connection) as queries:
        leaderboard_refresh_maybe()
    assert not [q for q in queries.captured_queries if "COUNT" in q["sql"].upper()]
    assert _wait_for_snapshots() >= 8  # every style, ci and dedup setting of the overall board
    overall = Snapshot.objects.get(
        kind="board", category="", style_control=False, ci="sandwich", dedup=True
    )
    assert overall.votes == 10
    assert {r["name"] for r in overall.rows} == {"x", "y", "z"}
    assert store().get(VOTES_SINCE_REFRESH) == 0  # the count starts again


def test_a_refresh_computes_every_board_kind_the_page_offers(settings: object) -> None:
    settings.ARENA_MIN_VOTES = 5  # type: ignore[attr-defined]
    _votes(30)
    snapshots = snapshots_refresh()
    assert snapshots is not None
    boards = {(s.category, s.style_control, s.ci, s.dedup) for s in snapshots}
    assert boards == {
        (category, style, ci, dedup)
        for category in ("", "math")
        for style in (False, True)
        for ci in ("sandwich", "bootstrap")
        for dedup in (True, False)
    }
    assert {s.kind for s in snapshots} == {"board"}
    assert all(s.extra.get("trend") for s in snapshots)


def test_a_refresh_while_another_holds_the_lock_does_nothing() -> None:
    _votes(30)
    with lock_held(REFRESH_LOCK, ttl=60) as held:
        assert held is not None
        assert snapshots_refresh() is None
    assert Snapshot.objects.count() == 0
    assert snapshots_refresh() is not None


def test_two_refreshes_started_together_run_one() -> None:
    _votes(600)
    start = threading.Barrier(2)
    results: list[object] = []

    def refresh() -> None:
        try:
            start.wait()
            results.append(snapshots_refresh())
        finally:
            connection.close()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(r is None for r in results) == [False, True]
    ran = next(r for r in results if r is not None)
    assert Snapshot.objects.count() == len(ran)  # type: ignore[arg-type]


HEAVY = {"matrices": {"names": ["x"]}, "trend": {"labels": []}, "style": {"votes": 0}}


def _snapshot(at: object, **board: object) -> int:
    snapshot = Snapshot.objects.create(
        kind=str(board.pop("kind", "board")), votes=1, seconds=0.0, rows=[], extra=HEAVY, **board
    )
    Snapshot.objects.filter(pk=snapshot.pk).update(created_at=at)
    return snapshot.pk


def test_pruning_keeps_the_latest_few_per_board_and_the_last_of_each_day() -> None:
    now = timezone.now().replace(hour=12)
    day = timedelta(days=1)
    today = [_snapshot(now - timedelta(minutes=m)) for m in (50, 40, 30, 20, 10)]
    yesterday = [_snapshot(now - day - timedelta(minutes=m)) for m in (30, 20, 10)]
    long_ago = [_snapshot(now - 3 * day - timedelta(minutes=m)) for m in (20, 10)]
    math = [_snapshot(now - timedelta(minutes=m), category="math") for m in (20, 10)]
    lab = [
        _snapshot(now - timedelta(minutes=m), kind="filtered", filter={"sources": ["lab"]})
        for m in (40, 30, 20, 10)
    ]
    assert snapshots_prune(keep=3) == 2 + 2 + 1 + 1
    kept = set(Snapshot.objects.values_list("id", flat=True))
    assert kept == {*today[-3:], yesterday[-1], long_ago[-1], *math, *lab[-3:]}
    # The day's last is kept for history: its rows and style, not its heat map or trend.
    assert Snapshot.objects.get(pk=yesterday[-1]).extra == {"style": {"votes": 0}}
    assert Snapshot.objects.get(pk=today[-1]).extra == HEAVY


def test_beat_schedules_registered_tasks() -> None:
    app.loader.import_default_modules()
    schedule = app.conf.beat_schedule
    assert {entry["task"] for entry in schedule.values()} <= set(app.tasks)
    assert "ratings.tasks.leaderboard_refresh" in {e["task"] for e in schedule.values()}


def test_ratings_tasks_run_on_their_own_queue() -> None:
    app.loader.import_default_modules()
    for name in ("ratings.tasks.leaderboard_refresh", "ratings.tasks.voters_flag"):
        route = app.amqp.router.route({}, name)
        assert route["queue"].name == django_settings.ARENA_QUEUE_RATINGS == "ratings"
    answer = app.amqp.router.route({}, "inference.tasks.generate_answer")
    assert answer["queue"].name != "ratings"
