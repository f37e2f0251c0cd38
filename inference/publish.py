"""The one helper that sends worker -> browser events through the channel layer."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.exceptions
from channels.layers import get_channel_layer

from arena.events import ServerEvent, battle_group

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

    async def send(self, event: ServerEvent) -> None:
        final = event["type"] in ("gen.done", "gen.error")  # always worth a try
        if not final and time.monotonic() < self._paused_until:
            self.dropped += 1
            return
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS is not configured"
        coro = layer.group_send(self.group, {"type": "battle.event", "event": event})
        home = self.home_loop
        try:
            if home is None or home is asyncio.get_running_loop():
                await coro
            else:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, home))
        except LAYER_ERRORS as exc:
            self.dropped += 1
            self._paused_until = time.monotonic() + LAYER_PAUSE_SECONDS
            log.warning("channel layer unavailable, dropping %s events: %r", event["type"], exc)
