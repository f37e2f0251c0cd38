"""The embedded default's beat (arena/beat.py): CELERY_BEAT_SCHEDULE run by a
thread of the web process, started by arena/asgi.py."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

import arena.asgi  # noqa: F401  (the web process: starts the beat in the embedded default)
from arena.beat import Beat, beat_start
from arena.celery import app
from arena.models import Vote
from inference.models import Contender
from ratings.models import FlaggedVoter

pytestmark = pytest.mark.django_db(transaction=True)


def _wait(condition: object, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def contrarian(contenders: list[Contender]) -> str:
    """Twenty visitors agree that alpha beats beta; one always says beta."""
    alpha, beta = contenders
    rows = [
        Vote(contender_a=alpha, contender_b=beta, choice="a", anonymous=True, session_key=f"v{i}")
        for i in range(20)
        for _ in range(10)
    ]
    rows += [
        Vote(contender_a=alpha, contender_b=beta, choice="b", anonymous=True, session_key="odd")
        for _ in range(30)
    ]
    Vote.objects.bulk_create(rows)
    return "odd"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def beat_log() -> Iterator[list[str]]:
    """What the beat thread logs (caplog sees only what reaches the root logger)."""
    handler = _Lines()
    logger = logging.getLogger("arena.beat")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_the_outlier_test_runs_on_its_schedule_in_the_embedded_default(
    contrarian: str, settings: object, beat_log: list[str]
) -> None:
    settings.ARENA_TASKS = "thread"  # type: ignore[attr-defined]
    settings.ARENA_BEAT = True  # type: ignore[attr-defined]
    settings.CELERY_BEAT_SCHEDULE = {  # type: ignore[attr-defined]
        "broken": {"task": "no.such.task", "schedule": 0.2},
        "malformed": {"task": "ratings.tasks.voters_flag", "schedule": "hourly"},
        "outlier-voters": {"task": "ratings.tasks.voters_flag", "schedule": 0.3},
    }
    beat_start()  # already running when arena.asgi started it: then a no-op
    assert [t for t in threading.enumerate() if t.name == "beat" and t.daemon]
    assert _wait(lambda: FlaggedVoter.objects.filter(session_key=contrarian).exists())
    # A failing entry is logged, and neither stops the thread nor the others.
    assert _wait(lambda: "beat entry broken (no.such.task) failed" in beat_log)
    assert sum(line.startswith("beat entry malformed is malformed") for line in beat_log) == 1
    FlaggedVoter.objects.all().delete()
    assert _wait(lambda: FlaggedVoter.objects.filter(session_key=contrarian).exists())
    assert [t for t in threading.enumerate() if t.name == "beat" and t.is_alive()]


def test_an_entry_first_runs_one_interval_after_start_and_never_while_off(
    contrarian: str, settings: object
) -> None:
    settings.ARENA_BEAT = False  # type: ignore[attr-defined]
    # The process's own beat idles; this test drives one of its own.
    settings.CELERY_BEAT_SCHEDULE = {}  # type: ignore[attr-defined]
    schedule = {
        "outlier-voters": {"task": "ratings.tasks.voters_flag", "schedule": 0.5},
        "serving-health": {"task": "inference.tasks.serving_health_check", "schedule": 0.1},
    }
    beat = Beat(lambda: schedule)
    assert beat.tick() <= 0.5
    assert set(beat.last_run) == {"outlier-voters"}  # health has its own monitor thread
    time.sleep(0.6)
    beat.tick()  # due, but the beat is off: skipped, not stored up
    assert not FlaggedVoter.objects.exists()
    settings.ARENA_BEAT = True  # type: ignore[attr-defined]
    beat.tick()
    assert not FlaggedVoter.objects.exists()  # the next run is one interval away
    time.sleep(0.6)
    beat.tick()
    assert FlaggedVoter.objects.filter(session_key=contrarian).exists()


def test_each_scheduled_entry_names_the_queue_its_task_is_routed_to() -> None:
    schedule: dict[str, dict[str, Any]] = django_settings.CELERY_BEAT_SCHEDULE
    for name, entry in schedule.items():
        routed = app.amqp.router.route({}, entry["task"])["queue"].name
        assert entry["options"]["queue"] == routed, name
        assert entry["schedule"] > 0, name
