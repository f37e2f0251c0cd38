"""A socket's frames, written in order by one writer, batched when it can.

Every frame a battle socket sends goes through its outbox: the events relayed
from the battle's group (`push`) and the consumer's own replies (`send`), so
a reply never overtakes an event that came before it.

A client that asked for batched frames (`?batch=1` on the websocket URL: the
page and bench/load.py do) gets the events waiting at the moment of writing
as one JSON array, in order; relayed events wait up to ARENA_SOCKET_GATHER_MS
for company. Both answers of a battle stream at once, so under load most
frames carry two or more events: half the writes, in the web server and in
the browser (bench/load.py). Any other client gets one event per frame, as
the protocol always had.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, write: Callable[[str], Awaitable[None]], *, batch: bool, gather: float):
        self._write = write
        self.batch = batch
        self._gather = gather if batch else 0.0
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False
        self.frames = 0  # written, for tests and logs
        self.events = 0

    def push(self, text: str) -> None:
        """A relayed event (JSON): written within the gather time, with the
        others waiting then."""
        if self.closed:
            return
        self._pending.append(text)
        if self._writer is not None or self._timer is not None:
            return
        if self._gather > 0:
            self._timer = self._loop.call_later(self._gather, self._start)
        else:
            self._start()

    async def send(self, text: str) -> None:
        """The consumer's own reply: written now, after what is already waiting."""
        if self.closed:
            return
        self._pending.append(text)
        if self._timer is not None:
            self._timer.cancel()
            self._start()
        elif self._writer is None:
            self._start()
        writer = self._writer
        if writer is not None:
            await asyncio.shield(writer)

    def close(self) -> None:
        """The socket is gone: drop what waits."""
        self.closed = True
        self._pending = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start(self) -> None:
        self._timer = None
        self._writer = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                texts, self._pending = self._pending, []
                self.events += len(texts)
                if self.batch and len(texts) > 1:
                    self.frames += 1
                    await self._write("[" + ",".join(texts) + "]")
                else:
                    for text in texts:
                        self.frames += 1
                        await self._write(text)
        except Exception as exc:  # the socket is closing: nothing more can reach it
            log.info("socket write failed, dropping its outbox: %r", exc)
            self.close()
        finally:
            self._writer = None
