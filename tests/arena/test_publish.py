"""One envelope for every server event published to a battle: realtime's
`publish` (the consumer's broadcasts, the reaper) and a generation's
`Publisher` send `{"type": "battle.event", "text": <the event's JSON>}`, and
that is the only shape the sockets' side reads."""

from __future__ import annotations

import asyncio
import json
import uuid

from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer

from arena.events import gen_error_event, gen_start_event
from realtime import battle_group
from realtime.hub import BattleHub
from realtime.publisher import Publisher, publish


async def _received(battle: str, send: object) -> dict[str, object]:
    layer = get_channel_layer()
    assert layer is not None
    channel = await layer.new_channel()
    await layer.group_add(battle_group(battle), channel)
    try:
        await send  # type: ignore[misc]
        return await asyncio.wait_for(layer.receive(channel), timeout=10)
    finally:
        await layer.group_discard(battle_group(battle), channel)


async def test_publish_sends_the_event_encoded_once_to_the_battles_group() -> None:
    battle = str(uuid.uuid4())
    event = gen_error_event(side="a", turn=0, attempt=0, code="worker_lost")
    message = await _received(battle, publish(battle, event))
    assert message == {"type": "battle.event", "text": json.dumps(event)}


async def test_a_generations_publisher_sends_the_same_envelope() -> None:
    battle = str(uuid.uuid4())
    event = gen_start_event(side="b", turn=2, attempt=1)
    message = await _received(battle, Publisher(battle).send(event))
    assert message == {"type": "battle.event", "text": json.dumps(event)}


def test_the_hub_passes_on_the_envelopes_text_and_drops_any_other_shape() -> None:
    layer = RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:6379/0"])  # never connects
    text = json.dumps(gen_start_event(side="a", turn=0, attempt=0))

    async def decode(message: object) -> str | None:
        return BattleHub(layer).decode(layer.serialize(message))

    assert asyncio.run(decode({"type": "battle.event", "text": text})) == text
    old_shape = {"type": "battle.event", "event": json.loads(text)}
    assert asyncio.run(decode(old_shape)) is None
    assert asyncio.run(decode({"type": "websocket.send", "text": text})) is None
