"""The one helper that sends worker -> browser events through the channel layer."""

from __future__ import annotations

import asyncio

from channels.layers import get_channel_layer

from arena.events import ServerEvent, battle_group


class Publisher:
    """Sends events to every socket watching a battle.

    `home_loop` is the web server's event loop when generation runs in a
    thread of the web process: the in-memory channel layer lives on that loop,
    so sends hop onto it. Celery workers pass None and send from their own loop.
    """

    def __init__(self, battle_id: str, home_loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.group = battle_group(battle_id)
        self.home_loop = home_loop

    async def send(self, event: ServerEvent) -> None:
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS is not configured"
        coro = layer.group_send(self.group, {"type": "battle.event", "event": event})
        home = self.home_loop
        if home is None or home is asyncio.get_running_loop():
            await coro
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, home))
