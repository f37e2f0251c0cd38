"""Faults: PostgreSQL unreachable for a few seconds during battles and votes.

The shared server is never stopped: a dedicated daphne and worker reach it
through a TCP proxy of this test, which is cut (connections closed, new ones
refused) and restored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from asgiref.sync import sync_to_async

from arena.models import Answer, Vote
from inference.models import Contender
from tests.arena.faultstack import (
    SHORT,
    PrivateRedis,
    answer_statuses,
    before_the_fault,
    stack_start,
)
from tests.arena.tcpproxy import TcpProxy
from tests.conftest import ON_SERVICES, child_database_url, child_env
from tests.consistency import consistency_problems

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.services,
    pytest.mark.model,
    pytest.mark.skipif(not ON_SERVICES, reason="needs PostgreSQL, Redis and Celery workers"),
]
OUTAGE_SECONDS = 4.0


@pytest.fixture
def db_stack(contenders: object) -> Iterator[tuple[TcpProxy, str]]:
    url = urlsplit(child_database_url())
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    proxy.start()
    netloc = url.netloc.rsplit("@", 1)
    auth = f"{netloc[0]}@" if len(netloc) == 2 else ""
    proxied = urlunsplit(url._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))
    redis = PrivateRedis()  # its own queues: the session's worker must not take these answers
    redis.start()
    env = child_env(
        DATABASE_URL=proxied,
        REDIS_URL=redis.url,
        ARENA_STALE_SECONDS="4",
        ARENA_REAP_INTERVAL_SECONDS="0.5",
        ARENA_PENDING_SECONDS="30",
        ARENA_DB_CONNECT_TIMEOUT_SECONDS="2",
    )
    worker, server, base = stack_start("db-fault", env)
    yield proxy, base
    server.stop()
    worker.stop()
    redis.stop()
    proxy.stop()


def _current_statuses(battle_id: str) -> list[str]:
    return list(
        Answer.objects.filter(turn__battle_id=battle_id, superseded=False).values_list(
            "status", flat=True
        )
    )


async def test_a_database_outage_is_told_retried_and_leaves_nothing_half_written(
    db_stack: tuple[TcpProxy, str],
) -> None:
    proxy, url = db_stack
    alice, battle0, bob, battle1 = await before_the_fault(url, long_tokens=300)

    proxy.cut()
    cut_at = time.monotonic()
    # Requests during the outage get a clear, retryable error; the socket stays open.
    vote = await alice.reply({"type": "vote", "choice": "a"}, "vote.recorded", timeout=30)
    assert vote["type"] == "error", vote
    assert (vote["code"], vote["retry_after"] > 0) == ("unavailable", True)
    start = await alice.reply({"type": "battle.start"}, "battle.state", timeout=30)
    assert start["type"] == "error"
    assert start["code"] == "unavailable"
    assert await sync_to_async(Vote.objects.count)() == 0
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
    proxy.restore()

    # The unacknowledged vote is retried on the same socket and counts once.
    retried = await alice.reply({"type": "vote", "choice": "a"}, "vote.recorded")
    assert retried["type"] == "vote.recorded", retried
    again = await alice.reply({"type": "vote", "choice": "a"}, "vote.recorded")
    assert again["type"] == "vote.recorded", again  # a retry is acknowledged again
    changed = await alice.reply({"type": "vote", "choice": "b"}, "vote.recorded")
    assert changed.get("code") == "already_voted", changed
    assert await sync_to_async(Vote.objects.filter(battle_id=battle0).count)() == 1
    # Bob's answers end: completed after the outage, or failed (never stuck).
    deadline = time.monotonic() + 120
    while not set(statuses := await sync_to_async(_current_statuses)(battle1)) <= {
        "done",
        "error",
    }:
        assert time.monotonic() < deadline, f"answers stuck: {statuses}"
        await asyncio.sleep(0.2)
    resync = await bob.reply({"type": "battle.resume", "battle": battle1}, "battle.state")
    assert set(answer_statuses(resync)) <= {"done", "error"}
    # The same socket goes on with a new battle.
    await sync_to_async(Contender.objects.update)(params=SHORT)
    fresh = await alice.reply({"type": "battle.start"}, "battle.state")
    assert fresh["type"] == "battle.state", fresh
    await alice.send({"type": "message.send", "text": "Hi again"})
    ended = await alice.answers_finished()
    assert [e["type"] for e in ended if e["type"] in ("gen.done", "gen.error")] == ["gen.done"] * 2
    assert await sync_to_async(consistency_problems)() == []
    rows = await sync_to_async(
        lambda: list(
            Answer.objects.filter(turn__battle_id=battle1).values_list(
                "side", "status", "error_code"
            )
        )
    )()
    votes = await sync_to_async(Vote.objects.count)()
    print(f"\ndb fault: cut {OUTAGE_SECONDS} s; battle {battle1}: {rows}; "
          f"votes {votes}; proxied connections {proxy.accepted}")  # fmt: skip
    for v in (alice, bob):
        await v.close()
