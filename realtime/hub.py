"""Battle events from Redis straight to this web process's sockets.

Every event of a battle (a worker's token deltas, another socket's state or
reveal) is published on the battle group's Redis channel, in channels_redis's
format (realtime.publisher). Channels' own way to deliver it costs, per event
and per socket: a redis-py `get_message`, a queue per consumer, a new task
and an `asyncio.wait` in the consumer's dispatch loop, and the session
wrapper's `send`; about half of the web server's CPU under load
(bench/load.py). The hub holds the process's battle subscriptions on one
connection per Redis shard, parses every reply a read brought at once
(hiredis), and hands each event's text to the sockets watching that battle
(their `Outbox`, realtime.outbox), in the order Redis delivered them.

What channels_redis gave and the hub keeps: a subscription is confirmed by
Redis before `join` returns (nothing published after it is missed); a lost
connection is retried with back-off and its subscriptions renewed. And one
thing more: once they are renewed, every socket is told to resync (it sends
the battle's saved state), since the events published while Redis was away
are gone. A connection that stops answering its health check is dropped and
made again.

Used with the Redis pub/sub channel layer on redis:// or rediss:// hosts;
anything else (the in-memory layer of the embedded default, a unix socket)
goes through Channels' groups as before (`battle_hub` returns None).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

log = logging.getLogger(__name__)
HEALTH_SECONDS = 10.0  # a PING this often; no PONG in ARENA_REDIS_TIMEOUT_SECONDS drops it
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0)  # then every second, while any socket watches


class Sink(Protocol):
    """A socket watching battles."""

    def deliver(self, text: str) -> None:
        """A battle event, JSON-encoded."""

    def resync(self) -> None:
        """Events may have been lost: send the saved state."""


class HubUnavailable(ConnectionError):
    """Redis cannot be reached, or did not confirm a subscription in time."""


def command(*parts: bytes | str) -> bytes:
    """A Redis command in RESP."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Address:
    """Where a shard's Redis listens, from its redis:// or rediss:// URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {parts.scheme}://")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "rediss":
            self.ssl = ssl.create_default_context()
            reqs = parse_qs(parts.query).get("ssl_cert_reqs", ["required"])[-1].lower()
            if reqs in ("none", "cert_none"):
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE

    def auth(self) -> bytes | None:
        if self.password is None:
            return None
        if self.username:
            return command("AUTH", self.username, self.password)
        return command("AUTH", self.password)


class PubSubLayer:
    """channels_redis' pub/sub layer as far as realtime needs it: its shards'
    addresses, which shard and Redis channel carry a group's messages, and
    its message format. The one place that reads the layer's private API
    (`_get_layer`, `_shards`, `_get_shard`, `_get_group_channel_name`,
    `host`): tests/realtime/test_layer_api.py fails when a channels_redis
    release changes it. Raises ValueError for a host that is not redis:// or
    rediss:// (a unix socket, say): the layer's own groups serve those."""

    def __init__(self, layer: Any) -> None:
        if not isinstance(layer, RedisPubSubChannelLayer):
            raise TypeError(f"not channels_redis' pub/sub layer: {type(layer).__name__}")
        self.layer = layer
        self._loop_layer = layer._get_layer()
        self._shards = list(self._loop_layer._shards)
        self.addresses = [Address(shard.host["address"]) for shard in self._shards]
        self.serialize: Callable[[dict[str, Any]], bytes] = layer.serialize
        self.deserialize: Callable[[bytes], Any] = layer.deserialize

    def route(self, group: str) -> tuple[int, str]:
        """The index of the shard (in `addresses`) and the Redis channel that
        carry `group`'s messages, as the layer's own group_send sends them."""
        loop_layer = self._loop_layer
        channel: str = loop_layer._get_group_channel_name(group)
        return self._shards.index(loop_layer._get_shard(channel)), channel


class RespConnection(asyncio.Protocol):
    """A plain connection to one Redis server, its replies read with hiredis:
    what the hub's subscriber and the workers' publisher share."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.replies: deque[asyncio.Future[Any]] = deque()  # for the commands sent, in order

    async def connect(self) -> None:
        """Connects and authenticates within ARENA_REDIS_TIMEOUT_SECONDS; a connection
        half made is aborted."""
        address = self.address
        self.reader = hiredis.Reader()
        try:
            async with asyncio.timeout(settings.ARENA_REDIS_TIMEOUT_SECONDS):
                await asyncio.get_running_loop().create_connection(
                    lambda: self,
                    address.host,
                    address.port,
                    ssl=address.ssl,
                    server_hostname=address.host if address.ssl else None,
                )
                auth = address.auth()
                if auth is not None:
                    await self.ask(auth)
        except BaseException:
            if self.transport is not None:
                self.transport.abort()
            raise

    def ask(self, data: bytes) -> asyncio.Future[Any]:
        """Sends a command; its reply comes to the future returned."""
        assert self.transport is not None
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.replies.append(reply)
        self.transport.write(data)
        return reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass


class _Link(RespConnection):
    """One subscriber connection to one Redis shard, and its channels' sinks."""

    def __init__(self, hub: BattleHub, address: Address) -> None:
        super().__init__(address)  # replies: AUTH's and PING's
        self.hub = hub
        self.sinks: dict[bytes, set[Sink]] = {}
        self.subscribed: set[bytes] = set()  # confirmed by Redis on this connection
        self.requested: set[bytes] = set()  # SUBSCRIBE sent, not yet confirmed
        self.waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self.connecting: asyncio.Task[None] | None = None
        self.health: asyncio.Task[None] | None = None
        self.lost = False  # a connection was lost: renewed subscriptions resync the sockets

    # --- what the hub asks ------------------------------------------------

    async def join(self, channel: bytes, sink: Sink) -> None:
        self.sinks.setdefault(channel, set()).add(sink)
        try:
            await self._up()
            if channel in self.subscribed:
                return
            waiter = self._waiter(channel)
            if channel not in self.requested:
                self._subscribe([channel])
            async with asyncio.timeout(settings.ARENA_REDIS_TIMEOUT_SECONDS):
                await waiter
        except (OSError, TimeoutError) as exc:
            self.leave(channel, sink)
            raise HubUnavailable(f"Redis did not confirm the subscription: {exc!r}") from exc

    def leave(self, channel: bytes, sink: Sink) -> None:
        sinks = self.sinks.get(channel)
        if sinks is None:
            return
        sinks.discard(sink)
        if sinks:
            return
        del self.sinks[channel]
        if self.transport is not None and (channel in self.subscribed or channel in self.requested):
            self.subscribed.discard(channel)
            self.requested.discard(channel)
            self.transport.write(command("UNSUBSCRIBE", channel))

    def close(self) -> None:
        for task in (self.connecting, self.health):
            if task is not None:
                task.cancel()
        if self.transport is not None:
            self.transport.abort()

    # --- the connection -----------------------------------------------------

    async def _up(self) -> None:
        if self.transport is not None:
            return
        if self.connecting is None or self.connecting.done():
            self.connecting = asyncio.get_running_loop().create_task(self._connect())
        await asyncio.shield(self.connecting)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        await self.connect()
        channels = list(self.sinks)
        waiters = [self._waiter(channel) for channel in channels]
        if channels:
            self._subscribe(channels)
        self.health = loop.create_task(self._check_health())
        if self.lost:
            # Events published while the link was down are gone: once the
            # subscriptions are renewed, every watching socket resyncs.
            self.lost = False
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(settings.ARENA_REDIS_TIMEOUT_SECONDS):
                    await asyncio.gather(*waiters)
            for sinks in list(self.sinks.values()):
                for sink in list(sinks):
                    sink.resync()

    def _waiter(self, channel: bytes) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(channel, []).append(waiter)
        return waiter

    def _subscribe(self, channels: list[bytes]) -> None:
        assert self.transport is not None
        self.requested.update(channels)
        self.transport.write(command("SUBSCRIBE", *channels))

    async def _check_health(self) -> None:
        while self.transport is not None:
            await asyncio.sleep(HEALTH_SECONDS)
            transport = self.transport
            if transport is None:
                return
            try:
                async with asyncio.timeout(settings.ARENA_REDIS_TIMEOUT_SECONDS):
                    await self.ask(command("PING"))
            except (OSError, TimeoutError):
                log.warning("Redis did not answer the hub's health check; reconnecting")
                transport.abort()
                return

    async def _reconnect(self) -> None:
        attempt = 0
        while self.sinks and self.transport is None:
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1
            try:
                await self._up()
            except (OSError, TimeoutError) as exc:
                if attempt == 1 or attempt % 30 == 0:
                    log.warning("battle hub: Redis unreachable, retrying: %r", exc)
        if self.transport is not None:
            log.info("battle hub: reconnected to Redis after %d attempt(s)", attempt)

    # --- asyncio.Protocol -------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.subscribed.clear()
        self.requested.clear()
        error = HubUnavailable(f"the connection to Redis was lost: {exc!r}")
        for waiters in self.waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        self.waiters.clear()
        for reply in self.replies:
            if not reply.done():
                reply.set_exception(error)
        self.replies.clear()
        if self.health is not None:
            self.health.cancel()
            self.health = None
        if self.hub.closed:
            return
        log.warning("battle hub: lost its Redis connection (%r)", exc)
        self.lost = True
        if self.sinks:
            self.hub.hold(asyncio.get_running_loop().create_task(self._reconnect()))

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        try:
            reply = reader.gets()
            while reply is not False:
                if type(reply) is list and reply and reply[0] == b"message":
                    sinks = self.sinks.get(reply[1])
                    if sinks:
                        text = self.hub.decode(reply[2])
                        if text is not None:
                            for sink in tuple(sinks):
                                sink.deliver(text)
                else:
                    self._reply(reply)
                reply = reader.gets()
        except hiredis.ProtocolError as exc:
            log.error("battle hub: unreadable reply from Redis (%r); reconnecting", exc)
            if self.transport is not None:
                self.transport.abort()

    def _reply(self, reply: Any) -> None:
        kind = reply[0] if type(reply) is list and reply else None
        if kind == b"subscribe":
            channel = reply[1]
            self.requested.discard(channel)
            if channel in self.sinks:
                self.subscribed.add(channel)
            for waiter in self.waiters.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == b"unsubscribe":
            channel = reply[1]
            if channel in self.sinks and channel not in self.requested:
                # Watched again while the UNSUBSCRIBE was on its way.
                self.subscribed.discard(channel)
                self._subscribe([channel])
        elif self.replies:  # AUTH's OK or error, PING's PONG
            waiter = self.replies.popleft()
            if waiter.done():
                return
            if isinstance(reply, hiredis.ReplyError):
                log.error("battle hub: Redis refused %s", reply)
                waiter.set_exception(HubUnavailable(str(reply)))
            else:
                waiter.set_result(reply)
        elif isinstance(reply, hiredis.ReplyError):
            log.error("battle hub: Redis error %s", reply)


class BattleHub:
    """This event loop's battle subscriptions: one link per Redis shard."""

    def __init__(self, layer: Any) -> None:
        self._layer = layer
        self._view = PubSubLayer(layer)
        self._links = [_Link(self, address) for address in self._view.addresses]
        self._held: set[asyncio.Task[None]] = set()
        self.closed = False

    def _link(self, group: str) -> tuple[_Link, bytes]:
        shard, channel = self._view.route(group)
        return self._links[shard], channel.encode()

    async def join(self, group: str, sink: Sink) -> None:
        """`sink` hears the group's events from now on; raises HubUnavailable
        when Redis does not confirm the subscription in time."""
        link, channel = self._link(group)
        await link.join(channel, sink)

    def leave(self, group: str, sink: Sink) -> None:
        link, channel = self._link(group)
        link.leave(channel, sink)

    def decode(self, data: bytes) -> str | None:
        try:
            message = self._view.deserialize(data)
        except Exception as exc:
            log.warning("battle hub: undecodable message dropped: %r", exc)
            return None
        # The one envelope (realtime.publisher): the event already encoded.
        is_event = type(message) is dict and message.get("type") == "battle.event"
        text = message.get("text") if is_event else None
        if not isinstance(text, str):
            log.warning("battle hub: unexpected message dropped: %.80r", message)
            return None
        return text

    def hold(self, task: asyncio.Task[None]) -> None:
        self._held.add(task)
        task.add_done_callback(self._held.discard)

    def close(self) -> None:
        self.closed = True
        for link in self._links:
            link.close()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BattleHub] = weakref.WeakKeyDictionary()


def battle_hub(layer: Any) -> BattleHub | None:
    """The running loop's hub for `layer`, when it is channels_redis's pub/sub
    layer on redis:// or rediss:// hosts; else None (Channels' groups)."""
    if not isinstance(layer, RedisPubSubChannelLayer) or not settings.ARENA_BATTLE_HUB:
        return None
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is not None and hub._layer is layer:
        return hub
    try:
        hub = BattleHub(layer)
    except (ValueError, KeyError, TypeError) as exc:
        log.info("battle hub not used (%s): Channels' groups deliver the events", exc)
        return None
    if loop in _hubs:
        with contextlib.suppress(Exception):
            _hubs[loop].close()
    _hubs[loop] = hub
    return hub
