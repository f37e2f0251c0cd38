"""Faults: Redis killed (SIGKILL) and restarted during battles.

A private redis-server, worker and daphne of this test alone; the shared Redis
is never touched. Live events are lost while Redis is away; what was saved is
not: a reconnected page resyncs from the database and goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from arena.models import Answer, Battle, Vote
from inference.models import Contender
from tests.arena.faultstack import (
    SHORT,
    PrivateRedis,
    Visitor,
    answer_statuses,
    before_the_fault,
    stack_start,
)
from tests.conftest import ON_SERVICES, Process, child_env
from tests.consistency import consistency_problems

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.services,
    pytest.mark.model,
    pytest.mark.skipif(not ON_SERVICES, reason="needs PostgreSQL, Redis and Celery workers"),
]
STALE = 4.0  # the dedicated daphne's reaper bound: stale window + reap interval
REAP_EVERY = 0.5
OUTAGE_SECONDS = 3.0


@pytest.fixture
def redis_stack(contenders: object) -> Iterator[tuple[PrivateRedis, Process, str]]:
    redis = PrivateRedis()
    redis.start()
    env = child_env(
        REDIS_URL=redis.url,
        ARENA_STALE_SECONDS=str(STALE),
        ARENA_REAP_INTERVAL_SECONDS=str(REAP_EVERY),
        ARENA_PENDING_SECONDS="30",
    )
    worker, server, url = stack_start("redis-fault", env)
    yield redis, worker, url
    server.stop()
    worker.stop()
    redis.stop()


def _unfinished(battle_id: str) -> list[str]:
    return list(
        Answer.objects.filter(turn__battle_id=battle_id, superseded=False)
        .exclude(status__in=Answer.FINISHED)
        .values_list("status", flat=True)
    )


async def _settled(battle_id: str, timeout: float) -> float:
    """Seconds until no current answer of the battle is pending or streaming."""
    started = time.monotonic()
    while await sync_to_async(_unfinished)(battle_id):
        assert time.monotonic() - started < timeout, "an answer is stuck"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def test_a_redis_restart_mid_stream_loses_no_saved_state(
    redis_stack: tuple[PrivateRedis, Process, str],
) -> None:
    redis, worker, url = redis_stack
    # Alice finished a battle before the fault (she votes during it); Bob's
    # answers are streaming when Redis dies.
    alice, battle0, bob, battle1 = await before_the_fault(url, long_tokens=150)
    redis.kill()
    killed_at = time.monotonic()

    # During the outage: a vote needs only the database, so it is acknowledged
    # (to this socket); what needs Redis is refused with a clear code.
    vote = await alice.reply({"type": "vote", "choice": "a"}, "vote.recorded")
    assert vote["type"] == "vote.recorded", vote
    await alice.until(lambda e: e["type"] == "battle.state", timeout=30)
    acknowledged = {battle0}
    refused = await alice.reply({"type": "battle.start"}, "battle.state", timeout=30)
    assert refused["type"] == "error", refused
    assert refused["code"] == "unavailable"
    assert refused["retry_after"] > 0
    # The worker notices, and waits for Redis rather than exiting.
    await asyncio.to_thread(worker.wait_for_log, "Connection to broker lost", 30)
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - killed_at)))
    assert worker.proc.poll() is None, worker.tail()
    outage = time.monotonic() - killed_at
    redis.start()
    restarted = timezone.now()
    # Bob's answers end in the database: finished by the worker, or failed by
    # the reaper within its bound; never left streaming.
    settle = await _settled(battle1, timeout=120)
    # Bob's open socket: the daphne's subscriptions came back with Redis, so an
    # answer that ended after the restart reaches it live.
    late = await sync_to_async(
        lambda: Answer.objects.filter(
            turn__battle_id=battle1, finished_at__gt=restarted + timedelta(seconds=1)
        ).count()
    )()
    finals = 0

    def both_ended(e: dict) -> bool:
        nonlocal finals
        finals += e["type"] in ("gen.done", "gen.error")
        return finals >= late

    if late:
        await bob.until(both_ended, timeout=30)
    # Bob's page reconnects and resyncs from the database.
    bob_again = await Visitor.open(url, session=bob.session)
    resync = await bob_again.reply({"type": "battle.resume", "battle": battle1}, "battle.state")
    assert resync["type"] == "battle.state", resync
    statuses = answer_statuses(resync)
    assert statuses and set(statuses) <= {"done", "error"}, statuses
    # A new battle works end to end once Redis is back.
    await sync_to_async(Contender.objects.update)(params=SHORT)
    fresh = await bob_again.reply({"type": "battle.start"}, "battle.state")
    assert fresh["type"] == "battle.state", fresh
    await bob_again.send({"type": "message.send", "text": "Hi again"})
    ended = await bob_again.answers_finished()
    assert [e["type"] for e in ended if e["type"] in ("gen.done", "gen.error")] == ["gen.done"] * 2
    recorded = await bob_again.reply({"type": "vote", "choice": "tie"}, "vote.recorded")
    assert recorded["type"] == "vote.recorded", recorded
    acknowledged.add(fresh["battle"]["id"])
    # Alice's retried vote counts once.
    await alice.reply({"type": "battle.resume", "battle": battle0}, "battle.state")
    again = await alice.reply({"type": "vote", "choice": "a"}, "vote.recorded")
    assert again["type"] == "vote.recorded", again  # acknowledged again, counted once

    votes = await sync_to_async(
        lambda: sorted(str(b) for b in Vote.objects.values_list("battle_id", flat=True))
    )()
    assert votes == sorted(acknowledged)
    assert await sync_to_async(consistency_problems)() == []
    stuck = await sync_to_async(
        lambda: Answer.objects.exclude(status__in=Answer.FINISHED).count()
    )()
    assert stuck == 0
    rows = await sync_to_async(
        lambda: list(
            Answer.objects.filter(turn__battle_id=battle1).values_list(
                "side", "status", "error_code"
            )
        )
    )()
    print(f"\nredis fault: outage {outage:.1f} s, battle {battle1} settled {settle:.1f} s "
          f"after restart: {rows}; live on the old socket after restart: {finals}/{late}; "
          f"votes {len(votes)}; battles {await sync_to_async(Battle.objects.count)()}")  # fmt: skip
    for v in (alice, bob, bob_again):
        await v.close()
