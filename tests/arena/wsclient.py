"""A thin test client over channels' WebsocketCommunicator and the real ASGI app."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from channels.testing import WebsocketCommunicator

from arena.asgi import application
from arena.visitors import COOKIE, visitor_cookie_value

Event = dict[str, Any]


class Client:
    def __init__(
        self,
        session_key: str | None,
        origin: str = "http://127.0.0.1:8000",
        address: str = "127.0.0.1",
        path: str = "/ws/battle/",
        cookie: str | None = None,
    ) -> None:
        """`session_key`: the visitor id, sent signed as the page's cookie
        would be; `cookie`: a Cookie header to send as is instead."""
        headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]
        if session_key and cookie is None:
            cookie = f"{COOKIE}={visitor_cookie_value(session_key)}"
        if cookie:
            headers.append((b"cookie", cookie.encode()))
        self.comm = WebsocketCommunicator(application, path, headers=headers)
        self.comm.scope["client"] = [address, 50000]
        self.seen: list[Event] = []

    async def connect(self) -> bool:
        connected, _ = await self.comm.connect(timeout=10)
        return bool(connected)

    async def close(self) -> None:
        await self.comm.disconnect(timeout=10)

    async def send(self, event: Event | str) -> None:
        await self.comm.send_to(text_data=event if isinstance(event, str) else json.dumps(event))

    async def next(self, timeout: float = 60) -> Event:
        event: Event = await self.comm.receive_json_from(timeout=timeout)
        self.seen.append(event)
        return event

    async def until(self, done: Callable[[Event], bool], timeout: float = 120) -> list[Event]:
        """Events up to and including the first for which `done` is true."""
        deadline = time.monotonic() + timeout
        got: list[Event] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; got {[e['type'] for e in got]}")
            event = await self.next(timeout=remaining)
            got.append(event)
            if done(event):
                return got

    async def answers_finished(self, n: int = 2, timeout: float = 120) -> list[Event]:
        """Events until `n` answers have ended (gen.done or gen.error)."""
        ended = 0

        def done(e: Event) -> bool:
            nonlocal ended
            ended += e["type"] in ("gen.done", "gen.error")
            return ended >= n

        return await self.until(done, timeout)

    async def quiet(self, seconds: float = 0.3) -> bool:
        return await self.comm.receive_nothing(timeout=seconds)

    async def start(self, **fields: Any) -> Event:
        await self.send({"type": "battle.start", **fields})
        return await self.next()

    async def error(self, event: Event | str) -> Event:
        await self.send(event)
        reply = await self.until(lambda e: e["type"] == "error", timeout=10)
        return reply[-1]


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["type"] == kind]


async def settle() -> None:
    await asyncio.sleep(0)
