"""The private API of channels_redis that realtime reads (realtime.hub.PubSubLayer).

The hub subscribes and the publisher publishes on the Redis channels the
layer itself would use, in the layer's own format. These tests need no Redis
(the layer connects lazily): they fail, naming what changed, when a
channels_redis release moves what PubSubLayer reads, before any battle
silently stops streaming.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer

from realtime import battle_group
from realtime.hub import PubSubLayer

HOSTS = ["redis://127.0.0.1:6379/0", "redis://:secret@127.0.0.1:6390/2"]


def _view() -> tuple[RedisPubSubChannelLayer, PubSubLayer]:
    layer = RedisPubSubChannelLayer(hosts=HOSTS, prefix="arena-test")

    async def make() -> PubSubLayer:
        return PubSubLayer(layer)

    return layer, asyncio.run(make())


def test_the_layer_still_has_every_private_name_realtime_reads() -> None:
    layer = RedisPubSubChannelLayer(hosts=HOSTS)
    missing = [
        name for name in ("_get_layer", "serialize", "deserialize") if not hasattr(layer, name)
    ]

    async def loop_layer_names() -> list[str]:
        inner = layer._get_layer()
        names = ("_shards", "_get_shard", "_get_group_channel_name")
        return [name for name in names if not hasattr(inner, name)]

    missing += asyncio.run(loop_layer_names())
    assert not missing, (
        f"channels_redis {version('channels_redis')} no longer has {missing}: "
        "realtime.hub.PubSubLayer must follow it"
    )


def test_each_shard_is_reached_at_the_address_the_layer_was_given() -> None:
    _, view = _view()
    assert [(a.host, a.port, a.password) for a in view.addresses] == [
        ("127.0.0.1", 6379, None),
        ("127.0.0.1", 6390, "secret"),
    ]


def test_a_group_is_routed_to_the_channel_and_shard_of_the_layers_own_group_send() -> None:
    layer, view = _view()
    groups = [battle_group(f"0000-{i}") for i in range(40)]
    routes = [view.route(group) for group in groups]
    # The layer's documented naming, and its consistent hash across the shards.
    assert [channel for _, channel in routes] == [f"arena-test__group__{g}" for g in groups]
    assert {shard for shard, _ in routes} == {0, 1}

    async def layers_own() -> list[int]:
        inner = layer._get_layer()
        shards = list(inner._shards)
        return [shards.index(inner._get_shard(channel)) for _, channel in routes]

    assert [shard for shard, _ in routes] == asyncio.run(layers_own())


def test_a_message_round_trips_in_the_layers_format() -> None:
    _, view = _view()
    message = {"type": "battle.event", "text": '{"type":"gen.delta"}'}
    data = view.serialize(message)
    assert isinstance(data, bytes)
    assert view.deserialize(data) == message


def test_anything_but_the_pubsub_layer_is_refused() -> None:
    from channels.layers import InMemoryChannelLayer

    with pytest.raises(TypeError):
        PubSubLayer(InMemoryChannelLayer())
