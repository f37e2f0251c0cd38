"""Snapshots are recomputed by a task after every N votes and on a schedule."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from arena.celery import app
from arena.models import Vote
from inference.models import Contender, Engine
from ratings.models import Snapshot
from ratings.tasks import leaderboard_refresh_maybe

pytestmark = pytest.mark.django_db(transaction=True)


def _votes(n: int) -> None:
    x = Contender.objects.create(name="x", engine=Engine.NONE)
    y = Contender.objects.create(name="y", engine=Engine.NONE)
    Vote.objects.bulk_create(
        [
            Vote(contender_a=x, contender_b=y, choice="a" if i % 3 else "b", anonymous=True,
                 created_at=timezone.now())
            for i in range(n)
        ]
    )  # fmt: skip


def _wait_for_snapshots(timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = Snapshot.objects.count()
        if count:
            return count
        time.sleep(0.3)
    return 0


def test_every_nth_vote_refreshes_the_snapshots_in_the_background(
    settings: object, generation: None
) -> None:
    settings.ARENA_LEADERBOARD_EVERY = 10  # type: ignore[attr-defined]
    _votes(9)
    leaderboard_refresh_maybe()
    time.sleep(1)
    assert Snapshot.objects.count() == 0
    first = Vote.objects.first()
    assert first is not None
    Vote.objects.create(
        contender_a=first.contender_a, contender_b=first.contender_b,
        choice="tie", anonymous=True, created_at=timezone.now(),
    )  # fmt: skip
    leaderboard_refresh_maybe()
    assert _wait_for_snapshots() >= 2  # overall, and with style control
    overall = Snapshot.objects.get(category="", style_control=False)
    assert overall.votes == 10
    assert [r["name"] for r in overall.rows] == ["x", "y"]


def test_beat_schedules_registered_tasks() -> None:
    app.loader.import_default_modules()
    schedule = app.conf.beat_schedule
    assert {entry["task"] for entry in schedule.values()} <= set(app.tasks)
    assert "ratings.tasks.leaderboard_refresh" in {e["task"] for e in schedule.values()}
