"""Faults: a worker killed mid-generation, a vote retried, nothing left stuck."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.utils import timezone

from arena import services
from arena.events import ANSWER_ERRORS
from arena.models import Answer, Battle, Vote
from arena.reaper import reap_once
from inference.models import Contender
from tests.arena.wsclient import Client, of_type
from tests.conftest import ON_SERVICES, Process, child_env

pytestmark = pytest.mark.django_db(transaction=True)


def test_silent_and_unclaimed_answers_are_failed_once(contenders: object, alice: str) -> None:
    battle = services.battle_create(session_key=alice)
    a, b = services.turn_create(battle_id=battle.pk, session_key=alice, text="hi")
    assert services.answer_start(answer_id=a.pk) is not None
    long_ago = timezone.now() - timedelta(minutes=10)
    Answer.objects.filter(pk=a.pk).update(heartbeat_at=long_ago)
    Answer.objects.filter(pk=b.pk).update(created_at=long_ago)
    reaped = services.answers_reap(stale_after=15, pending_after=120)
    assert sorted((r.side, r.code) for r in reaped) == [("a", "worker_lost"), ("b", "not_started")]
    assert services.answers_reap(stale_after=15, pending_after=120) == []
    # A worker that wakes up late cannot overwrite the failure.
    late = services.AnswerOutcome(status="done", text="too late")
    assert services.answer_complete(answer_id=a.pk, outcome=late) is None
    assert Answer.objects.get(pk=a.pk).error_code == "worker_lost"
    # The visitor can regenerate and go on.
    new = services.turn_regenerate(battle_id=battle.pk, session_key=alice)
    assert [x.attempt for x in new] == [1, 1]


async def test_the_reaper_tells_the_page(contenders: object, alice: str) -> None:
    # A turn whose answers no worker ever picks up (made without dispatching).
    battle = await sync_to_async(services.battle_create)(session_key=alice)
    await sync_to_async(services.turn_create)(battle_id=battle.pk, session_key=alice, text="hi")
    client = Client(alice)
    await client.connect()
    await client.send({"type": "battle.resume", "battle": str(battle.pk)})
    state = await client.next()
    await sync_to_async(Answer.objects.update)(created_at=timezone.now() - timedelta(hours=1))
    assert await reap_once() == 2
    errors = await client.until(
        lambda e: len([x for x in client.seen if x["type"] == "gen.error"]) == 2, timeout=10
    )
    assert {e["code"] for e in of_type(errors, "gen.error")} == {"not_started"}
    assert {e["message"] for e in of_type(errors, "gen.error")} == {ANSWER_ERRORS["not_started"]}
    assert state["battle"]["id"]
    await client.close()


@pytest.mark.skipif(
    not ON_SERVICES, reason="killing a worker process needs Celery workers on Redis"
)
async def test_a_worker_killed_mid_stream_fails_the_turn_and_the_battle_recovers(
    contenders: object, alice: str, settings: object, celery_worker: Process
) -> None:
    settings.ARENA_QUEUE_LOCAL = "generation-doomed"  # type: ignore[attr-defined]
    settings.ARENA_STALE_SECONDS = 3.0  # type: ignore[attr-defined]
    settings.ARENA_REAP_INTERVAL_SECONDS = 0.5  # type: ignore[attr-defined]
    settings.ARENA_REAPER = True  # type: ignore[attr-defined]
    doomed = Process(
        "doomed-worker",
        [sys.executable, "-m", "celery", "-A", "arena", "worker", "--pool", "threads",
         "--concurrency", "2", "-Q", "generation-doomed", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle",
         "--hostname", f"doomed-{os.getpid()}@%h"],
        child_env(),
    )  # fmt: skip
    await asyncio.to_thread(doomed.wait_for_log, "ready.", 120)
    await sync_to_async(Contender.objects.update)(params={"max_tokens": 400, "temperature": 0})
    client = Client(alice)
    await client.connect()
    await client.start()
    await client.send({"type": "message.send", "text": "Write a long story about the sea."})
    await client.until(lambda e: e["type"] == "gen.delta", timeout=120)
    os.killpg(doomed.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    doomed.stop()

    def two_errors(_: dict) -> bool:
        return len(of_type(client.seen, "gen.error")) == 2

    await client.until(two_errors, timeout=30)
    took = time.monotonic() - killed_at
    assert took < 3.0 + 0.5 + 5  # stale window + reap interval + slack
    assert {e["code"] for e in of_type(client.seen, "gen.error")} == {"worker_lost"}
    rows = await sync_to_async(lambda: list(Answer.objects.values_list("side", "status", "text")))()
    assert {status for _, status, _ in rows} == {"error"}
    for side, _, text in rows:
        # Progress is saved every 2 s: what the database holds is what had streamed, or less.
        streamed = "".join(
            e["text"] for e in of_type(client.seen, "gen.delta") if e["side"] == side
        )
        assert streamed.startswith(text)
    assert (await client.error({"type": "vote", "choice": "a"}))["code"] == "failed_turn"

    # With a healthy worker, regenerate and finish the battle.
    settings.ARENA_QUEUE_LOCAL = "generation"  # type: ignore[attr-defined]
    await sync_to_async(Contender.objects.update)(params={"max_tokens": 6, "temperature": 0})
    await client.send({"type": "regenerate"})
    events = await client.answers_finished()
    assert len(of_type(events, "gen.done")) == 2
    await client.send({"type": "vote", "choice": "tie"})
    await client.until(lambda e: e["type"] == "vote.recorded")
    assert await sync_to_async(Vote.objects.count)() == 1
    assert (await sync_to_async(Battle.objects.get)()).status == "voted"
    await client.close()
    assert django_settings.ARENA_TASKS == "celery"


async def test_a_retried_vote_is_counted_once(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice)
    await client.connect()
    await client.start()
    await client.send({"type": "message.send", "text": "Hi"})
    await client.answers_finished()
    # The page retries (say the reply was lost): both frames arrive. Both are
    # acknowledged, the vote counts once; another choice is refused.
    await client.send({"type": "vote", "choice": "a"})
    await client.send({"type": "vote", "choice": "a"})
    recorded = 0

    def both_recorded(e: dict[str, object]) -> bool:
        nonlocal recorded
        recorded += e["type"] == "vote.recorded"
        return recorded == 2 or e["type"] == "error"

    replies = await client.until(both_recorded, timeout=30)
    assert [e["choice"] for e in of_type(replies, "vote.recorded")] == ["a", "a"], replies
    changed = await client.error({"type": "vote", "choice": "b"})
    assert changed["code"] == "already_voted"
    assert await sync_to_async(Vote.objects.count)() == 1
    await client.close()
