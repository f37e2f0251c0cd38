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

What waits is bounded: when a reader falls so far behind that more than
`max_events` relayed events (or `max_bytes` of their JSON) wait, they are
dropped, the events pushed after them too, until the consumer hands over a
fresh `battle.state` (`resync`): one frame that says all the dropped events
would have said. The check is two integer comparisons per pushed event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self,
        write: Callable[[str], Awaitable[None]],
        *,
        batch: bool,
        gather: float,
        max_events: int = 2000,
        max_bytes: int = 2_000_000,
        on_overflow: Callable[[], None] | None = None,
    ):
        self._write = write
        self.batch = batch
        self._gather = gather if batch else 0.0
        self._pending: list[str] = []
        self._size = 0  # characters of the pushed events waiting (JSON: ASCII, so bytes)
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._on_overflow = on_overflow
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False
        self.stale = False  # overflowed: pushes are dropped until `resync`
        self._refusing = False  # closed or stale: one test on the hot path
        self.frames = 0  # written, for tests and logs
        self.events = 0
        self.dropped = 0

    def push(self, text: str) -> None:
        """A relayed event (JSON): written within the gather time, with the
        others waiting then."""
        if self._refusing:
            self.dropped += 1
            return
        pending = self._pending
        pending.append(text)
        size = self._size = self._size + len(text)
        if size > self._max_bytes or len(pending) > self._max_events:
            self._overflow()
            return
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

    async def resync(self, text: str) -> None:
        """The battle's saved state after an overflow (or any loss): written
        before anything pushed from now on, and pushes are taken again."""
        self.pushes_take()
        await self.send(text)

    def pushes_take(self) -> None:
        """Take pushed events again (no state is owed: nothing is watched)."""
        self.stale = False
        self._refusing = self.closed

    def close(self) -> None:
        """The socket is gone: drop what waits."""
        self.closed = self._refusing = True
        self._pending = []
        self._size = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _overflow(self) -> None:
        """The reader is too far behind: forget what waits and ask for a state."""
        self.dropped += len(self._pending)
        log.info(
            "socket outbox over its bound (%d events, %d bytes): dropped, resyncing",
            len(self._pending),
            self._size,
        )
        self._pending = []
        self._size = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._on_overflow is not None:
            self.stale = self._refusing = True
            self._on_overflow()

    def _start(self) -> None:
        self._timer = None
        self._writer = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                texts, self._pending = self._pending, []
                self._size = 0
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
