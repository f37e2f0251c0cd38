"""The battle hub (realtime.hub) on the real Redis: a web process's own
subscriber delivers a battle's events to the sockets watching it, in order;
batched frames for clients that ask; subscriptions follow the sockets; a lost
connection comes back and the sockets resync."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
from channels.layers import get_channel_layer
from django.conf import settings

from realtime import battle_group
from realtime.hub import BattleHub, battle_hub
from realtime.publisher import Publisher
from tests.arena.wsclient import Client
from tests.conftest import ON_SERVICES

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.services,
    pytest.mark.skipif(not ON_SERVICES, reason="the hub runs with the Redis pub/sub layer"),
]


def hub() -> BattleHub:
    found = battle_hub(get_channel_layer())
    assert found is not None, "the Redis pub/sub layer should come with the hub"
    return found


def delta(i: int) -> dict[str, Any]:
    return {
        "type": "gen.delta", "side": "a", "turn": 0, "attempt": 0, "seq": i, "offset": i,
        "text": "x",
    }  # fmt: skip


async def frames(client: Client, until: int, timeout: float = 10) -> list[Any]:
    """Raw frames (decoded JSON) until `until` relayed events have come."""
    got: list[Any] = []
    count = 0
    deadline = time.monotonic() + timeout
    while count < until:
        frame = json.loads(await client.comm.receive_from(timeout=deadline - time.monotonic()))
        got.append(frame)
        count += sum(1 for e in (frame if isinstance(frame, list) else [frame]))
    return got


def flat(got: list[Any]) -> list[dict[str, Any]]:
    return [e for f in got for e in (f if isinstance(f, list) else [f])]


async def open_battle(session: str, path: str = "/ws/battle/") -> tuple[Client, str]:
    client = Client(session, path=path)
    assert await client.connect()
    state = await client.start()
    return client, state["battle"]["id"]


async def test_every_socket_on_a_battle_hears_its_events_in_order(
    contenders: object, alice: str
) -> None:
    first, battle = await open_battle(alice)
    second = Client(alice)
    assert await second.connect()
    await second.send({"type": "battle.resume", "battle": battle})
    assert (await second.next())["type"] == "battle.state"
    link, channel = hub()._link(battle_group(battle))
    assert len(link.sinks[channel]) == 2  # one subscription, two sockets

    publisher = Publisher(battle)
    for i in range(30):
        await publisher.send(delta(i))
    for client in (first, second):
        events = flat(await frames(client, 30))
        assert [e["seq"] for e in events] == list(range(30))
    await first.close()
    await second.close()


async def test_a_batching_client_gets_waiting_events_as_one_array_frame(
    contenders: object, alice: str
) -> None:
    batched, battle = await open_battle(alice, path="/ws/battle/?batch=1")
    plain = Client(alice)
    assert await plain.connect()
    await plain.send({"type": "battle.resume", "battle": battle})
    assert (await plain.next())["type"] == "battle.state"

    publisher = Publisher(battle)
    await asyncio.gather(*(publisher.send(delta(i)) for i in range(10)))
    got = await frames(batched, 10)
    assert [e["seq"] for e in flat(got)] == list(range(10))
    assert any(isinstance(f, list) and len(f) > 1 for f in got), got
    assert len(got) < 10
    got = await frames(plain, 10)
    assert [f["seq"] for f in got] == list(range(10))  # one object per frame, as ever
    await batched.close()
    await plain.close()


def subscribers(probe: redis.Redis, channel: bytes) -> int:
    counts: Any = probe.pubsub_numsub(channel)
    return int(counts[0][1])


async def test_subscriptions_follow_the_sockets(contenders: object, alice: str) -> None:
    client, battle = await open_battle(alice)
    link, channel = hub()._link(battle_group(battle))
    probe = redis.Redis.from_url(settings.REDIS_URL)
    try:
        assert subscribers(probe, channel) >= 1
        await client.close()
        for _ in range(100):  # the UNSUBSCRIBE is on its way
            if not subscribers(probe, channel):
                break
            await asyncio.sleep(0.05)
        assert subscribers(probe, channel) == 0
        assert channel not in link.sinks
    finally:
        probe.close()


async def test_a_lost_connection_comes_back_and_the_sockets_resync(
    contenders: object, alice: str
) -> None:
    client, battle = await open_battle(alice)
    link, channel = hub()._link(battle_group(battle))
    assert link.transport is not None
    link.transport.abort()  # as if Redis had dropped the subscriber
    resync = await client.until(lambda e: e["type"] == "battle.state", timeout=10)
    assert resync[-1]["battle"]["id"] == battle
    assert channel in link.subscribed
    publisher = Publisher(battle)
    await publisher.send(delta(0))
    assert (await client.next(timeout=10))["seq"] == 0
    await client.close()
