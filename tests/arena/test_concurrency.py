"""arena/concurrency.py: the daemon threads and per-event-loop values the apps keep."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref
from typing import Any

import pytest
from django.db import connections

from arena.concurrency import daemon, per_loop
from arena.models import Vote


@pytest.mark.django_db(transaction=True)
def test_a_daemon_runs_its_body_in_a_named_daemon_thread_and_closes_its_connection() -> None:
    seen: dict[str, Any] = {}

    def body() -> None:
        seen["thread"] = threading.current_thread()
        seen["votes"] = Vote.objects.count()  # opens this thread's connection
        seen["connection"] = connections["default"]

    thread = daemon("counting", body)
    thread.join(10)
    assert seen["thread"] is thread and thread.name == "counting" and thread.daemon
    assert seen["votes"] == 0
    assert seen["connection"] is not connections["default"]  # the thread's own
    assert seen["connection"].connection is None  # closed


def test_a_daemon_that_fails_logs_why_under_its_name(caplog: pytest.LogCaptureFixture) -> None:
    def body() -> None:
        raise RuntimeError("the index is missing")

    with caplog.at_level(logging.ERROR, logger="arena.concurrency"):
        daemon("index-warm", body).join(10)
    [record] = [r for r in caplog.records if r.name == "arena.concurrency"]
    assert record.getMessage() == "index-warm failed"
    assert record.exc_info is not None and "the index is missing" in str(record.exc_info[1])


class _Book:
    def __init__(self, owner: str) -> None:
        self.owner = owner


def test_a_per_loop_value_is_made_once_per_loop_and_dropped_with_it() -> None:
    made: list[_Book] = []

    @per_loop
    def book(owner: str) -> _Book:
        made.append(_Book(owner))
        return made[-1]

    async def twice(owner: str) -> tuple[_Book, _Book]:
        return book(owner), book("someone else")

    first, again = asyncio.run(twice("alice"))
    assert first is again and first.owner == "alice"  # the first call on a loop decides
    other, _ = asyncio.run(twice("bob"))
    assert other is not first and other.owner == "bob"
    dropped = weakref.ref(first)
    del first, again, made[:]
    gc.collect()
    assert dropped() is None


def test_a_per_loop_value_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        per_loop(object)()
