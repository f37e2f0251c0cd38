"""Real processes for fault tests: a private Redis that can be killed and
restarted, a dedicated Celery worker and daphne pointed at it (and, for
database faults, at a TCP proxy in front of PostgreSQL), and a visitor
speaking the websocket protocol over a real socket."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
from asgiref.sync import sync_to_async

from inference.models import Contender
from tests.conftest import Process, free_port
from tests.workers import worker_argv

Event = dict[str, Any]


class PrivateRedis:
    """A redis-server of this test alone, without persistence: a restart loses everything."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.starts = 0
        self.process: Process | None = None

    def start(self) -> None:
        self.starts += 1
        self.process = Process(
            f"redis-{self.port}-{self.starts}",
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            dict(os.environ),
        )  # fmt: skip
        self.process.wait_for_log("Ready to accept connections", timeout=30)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, nothing saved."""
        assert self.process is not None
        os.killpg(self.process.proc.pid, signal.SIGKILL)
        self.process.proc.wait(timeout=10)
        self.process.stop()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def stack_start(name: str, env: dict[str, str]) -> tuple[Process, Process, str]:
    """A Celery worker and a daphne server with `env`; (worker, server, url)."""
    worker = Process(
        f"{name}-worker",
        worker_argv(queues="generation,generation-http,default", concurrency=4, name=name),
        env,
    )
    port = free_port()
    server = Process(
        f"{name}-daphne",
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "arena.asgi:application"],
        env,
    )  # fmt: skip
    try:
        worker.wait_for_log("ready.", timeout=180)
        server.wait_for_log("Listening on TCP address", timeout=120)
    except BaseException:
        worker.stop()
        server.stop()
        raise
    return worker, server, f"http://127.0.0.1:{port}"


class Visitor:
    """A browser's websocket, over a real socket to a real server."""

    def __init__(self, url: str, session: str) -> None:
        self.url = url
        self.session = session
        self.seen: list[Event] = []
        self.ws: Any = None

    @classmethod
    async def open(cls, url: str, session: str | None = None) -> Visitor:
        if session is None:
            async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as http:
                page = await http.get("/")
                page.raise_for_status()
                session = page.cookies.get("arena_visitor")
            assert session, "GET / set no visitor cookie"
        visitor = cls(url, session)
        await visitor.connect()
        return visitor

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            "ws://" + self.url.removeprefix("http://") + "/ws/battle/",
            additional_headers={"Cookie": f"arena_visitor={self.session}", "Origin": self.url},
            proxy=None, open_timeout=30, ping_interval=None, max_size=2**22,
        )  # fmt: skip

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, event: Event) -> None:
        await self.ws.send(json.dumps(event))

    async def until(self, done: Callable[[Event], bool], timeout: float = 120) -> list[Event]:
        import asyncio

        deadline = time.monotonic() + timeout
        got: list[Event] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; got {[e['type'] for e in got]}")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), remaining)
            except TimeoutError:
                continue
            event = json.loads(raw)
            self.seen.append(event)
            got.append(event)
            if done(event):
                return got

    async def reply(self, event: Event, *kinds: str, timeout: float = 60) -> Event:
        """Send `event`; the first reply of one of `kinds` (or an error)."""
        await self.send(event)
        wanted = {*kinds, "error"}
        return (await self.until(lambda e: e["type"] in wanted, timeout))[-1]

    async def answers_finished(self, timeout: float = 120) -> list[Event]:
        ended = 0

        def done(e: Event) -> bool:
            nonlocal ended
            ended += e["type"] in ("gen.done", "gen.error")
            return ended >= 2

        return await self.until(done, timeout)


def states(events: list[Event]) -> list[Event]:
    return [e for e in events if e["type"] == "battle.state"]


def answer_statuses(state: Event) -> list[str]:
    return [turn[side]["status"] for turn in state["turns"] for side in ("a", "b") if turn[side]]


SHORT = {"max_tokens": 6, "temperature": 0.0}


async def before_the_fault(url: str, *, long_tokens: int) -> tuple[Visitor, str, Visitor, str]:
    """Alice has finished a short battle (she votes during the fault); Bob's
    long answers are streaming. (alice, her battle, bob, his battle)."""
    await sync_to_async(Contender.objects.update)(params=SHORT)
    alice = await Visitor.open(url)
    battle0 = (await alice.reply({"type": "battle.start"}, "battle.state"))["battle"]["id"]
    await alice.send({"type": "message.send", "text": "Hi"})
    await alice.answers_finished()
    await sync_to_async(Contender.objects.update)(
        params={"max_tokens": long_tokens, "temperature": 0.0}
    )
    bob = await Visitor.open(url)
    battle1 = (await bob.reply({"type": "battle.start"}, "battle.state"))["battle"]["id"]
    await bob.send({"type": "message.send", "text": "Write a long story about the sea."})
    await bob.until(lambda e: e["type"] == "gen.delta", timeout=120)
    return alice, battle0, bob, battle1
