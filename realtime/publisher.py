"""A generation's battle events, sent to every socket watching the battle."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Mapping
from typing import Any

import hiredis
import redis.exceptions
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

from realtime import battle_group
from realtime.hub import PubSubLayer, RespConnection, command

log = logging.getLogger(__name__)
# After a failed send, drop events for this long before trying the layer again:
# the answer goes on and is saved; pages resync from the database.
LAYER_PAUSE_SECONDS = 2.0
LAYER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Publisher:
    """Sends events to every socket watching a battle.

    `home_loop` is the web server's event loop when generation runs in a
    thread of the web process: the in-memory channel layer lives on that loop,
    so sends hop onto it. Celery workers pass None and send from their own loop.

    A live event is a convenience, the database is the record: when the channel
    layer (Redis) is down, events are dropped and counted in `dropped`, and the
    generation carries on.
    """

    def __init__(self, battle_id: str, home_loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.group = battle_group(battle_id)
        self.home_loop = home_loop
        self.dropped = 0
        self._paused_until = 0.0

    async def send(self, event: Mapping[str, Any]) -> None:
        final = event["type"] in ("gen.done", "gen.error")  # always worth a try
        if not final and time.monotonic() < self._paused_until:
            self.dropped += 1
            return
        try:
            await _group_publish(self.group, event, self.home_loop)
        except LAYER_ERRORS as exc:
            self.dropped += 1
            self._paused_until = time.monotonic() + LAYER_PAUSE_SECONDS
            log.warning("channel layer unavailable, dropping %s events: %r", event["type"], exc)


async def publish(battle_id: object, event: Mapping[str, Any]) -> None:
    """Sends one server event to every socket watching the battle, from the
    running loop (the web server's: the consumer's broadcasts, the reaper).
    Raises LAYER_ERRORS when the channel layer is down: the caller decides
    what the visitor hears instead (a generation's sends go through
    `Publisher`, which drops them)."""
    await _group_publish(battle_group(battle_id), event, None)


async def _group_publish(
    group: str, event: Mapping[str, Any], home: asyncio.AbstractEventLoop | None
) -> None:
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    # The one envelope of a battle event: encoded once here, sent as is by
    # every socket watching the battle (arena.consumers.BattleConsumer.dispatch,
    # realtime.hub.BattleHub.decode): no JSON work per socket.
    message = {"type": "battle.event", "text": json.dumps(event)}
    if home is not None and home is not asyncio.get_running_loop():
        coro = layer.group_send(group, message)
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, home))
    elif (pipeline := _pipeline_for(layer)) is not None:
        await pipeline.publish(group, message)
    else:
        await layer.group_send(group, message)


class PublishPipeline:
    """Every group message a process's event loop publishes, pipelined.

    channels_redis's pub/sub layer publishes one message per round trip under
    one lock per connection: with all of a worker's streams on one loop, the
    round trips queued behind each other and a worker relayed a few thousand
    tokens a second at most, its CPU half idle (bench/load.py). Here one
    writer sends whatever is waiting as one write per Redis shard, PUBLISH
    commands in the order they were published (a stream's deltas stay in
    order), in the layer's own format (its serializer, its group channel
    names, its hosts), so consumers receive them as if sent by the layer.
    Each shard has one plain connection whose replies are read with hiredis:
    redis-py's pipeline machinery cost a worker more CPU than the commands.
    A lost connection fails the sends waiting for their replies with the
    error; the next publish connects again.
    """

    def __init__(self, layer: Any) -> None:
        self._layer = layer
        self._view = PubSubLayer(layer)
        self._links = [_PublishLink(address) for address in self._view.addresses]
        self._waiting: dict[int, list[tuple[str, bytes, asyncio.Future[None]]]] = {}
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def publish(self, group: str, message: dict[str, Any]) -> asyncio.Future[None]:
        view = self._view
        shard, channel = view.route(group)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sends = self._waiting.setdefault(shard, [])
        sends.append((channel, view.serialize(message), done))
        self._wake.set()
        return done

    async def _run(self) -> None:
        gather = settings.ARENA_PUBLISH_GATHER_MS / 1000
        while True:
            await self._wake.wait()
            if gather:
                # A moment for other streams' events to join this write:
                # fewer, larger writes here, in Redis and in the web servers'
                # reads (bench/load.py), for at most this much latency.
                await asyncio.sleep(gather)
            self._wake.clear()
            batch, self._waiting = self._waiting, {}
            for shard, sends in batch.items():
                await self._links[shard].send(sends)


class _PublishLink(RespConnection):
    """One shard's connection for PUBLISH: replies come in order, one per command."""

    async def send(self, sends: list[tuple[str, bytes, asyncio.Future[None]]]) -> None:
        try:
            if self.transport is None:
                await self.connect()
        except Exception as exc:
            for *_, done in sends:
                if not done.done():
                    done.set_exception(exc)
            return
        assert self.transport is not None
        self.replies.extend(done for *_, done in sends)
        self.transport.write(b"".join(command(b"PUBLISH", ch, data) for ch, data, _ in sends))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = redis.exceptions.ConnectionError(f"the connection to Redis was lost: {exc!r}")
        while self.replies:
            done = self.replies.popleft()
            if not done.done():
                done.set_exception(error)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            reply = self.reader.gets()
            while reply is not False:
                done = self.replies.popleft() if self.replies else None
                if done is not None and not done.done():
                    if isinstance(reply, hiredis.ReplyError):
                        done.set_exception(redis.exceptions.ResponseError(str(reply)))
                    else:
                        done.set_result(None)
                reply = self.reader.gets()
        except hiredis.ProtocolError as exc:
            log.error("unreadable reply from Redis (%r); reconnecting", exc)
            if self.transport is not None:
                self.transport.abort()


_pipelines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PublishPipeline] = (
    weakref.WeakKeyDictionary()
)


def _pipeline_for(layer: Any) -> PublishPipeline | None:
    """The running loop's pipeline for channels_redis's pub/sub layer on
    redis:// or rediss:// hosts; None for any other layer or host (a unix
    socket): the layer's own group_send then."""
    if not isinstance(layer, RedisPubSubChannelLayer):
        return None
    loop = asyncio.get_running_loop()
    pipeline = _pipelines.get(loop)
    if pipeline is None or pipeline._layer is not layer:
        try:
            pipeline = PublishPipeline(layer)
        except (ValueError, KeyError, TypeError) as exc:
            log.info("publishing through the layer itself (%s)", exc)
            return None
        _pipelines[loop] = pipeline
    return pipeline
