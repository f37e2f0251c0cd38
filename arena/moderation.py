"""Moderation of user prompts before any model sees them.

Policies, in order: the built-in blocklist (regular expressions from
ARENA_MODERATION_BLOCKLIST), then an optional OpenAI-compatible moderation
endpoint (ARENA_MODERATION_URL, key in the variable ARENA_MODERATION_KEY_ENV
names). When the endpoint cannot be asked, ARENA_MODERATION_FAIL decides:
"closed" refuses the prompt, "open" lets it through.

The consumer asks `prompt_moderate_bounded`, after the cheap checks of the
message: the endpoint is called on a small pool of threads
(ARENA_MODERATION_THREADS) with at most ARENA_MODERATION_QUEUE more calls
waiting for one; past that the prompt is refused `busy`, so a flood of
prompts queues neither threads nor calls without end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

from django.conf import settings

from arena.events import ArenaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    flagged: bool
    reason: str = ""


@cache
def _blocklist() -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in settings.ARENA_MODERATION_BLOCKLIST]


def prompt_moderate(text: str) -> Decision:
    for pattern in _blocklist():
        if pattern.search(text):
            return Decision(True, "blocklist")
    if settings.ARENA_MODERATION_URL:
        return _remote(text)
    return Decision(False)


BUSY_RETRY_SECONDS = 2


class BoundedCalls:
    """A thread pool that refuses work past its threads plus a queue."""

    def __init__(self, *, threads: int, queue: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="moderation")
        self._limit = threads + queue
        self._taken = 0
        self._lock = threading.Lock()

    async def call(self, text: str) -> Decision:
        with self._lock:
            if self._taken >= self._limit:
                raise ArenaError(
                    "busy",
                    "Too many messages are being checked; try again in a moment.",
                    retry_after=BUSY_RETRY_SECONDS,
                )
            self._taken += 1
        # Released when the call ends, not when its caller stops waiting (a
        # socket that closes leaves its call running).
        future = self._pool.submit(prompt_moderate, text)
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: Future[Decision]) -> None:
        with self._lock:
            self._taken -= 1


@cache
def _bounded() -> BoundedCalls:
    return BoundedCalls(
        threads=settings.ARENA_MODERATION_THREADS, queue=settings.ARENA_MODERATION_QUEUE
    )


async def prompt_moderate_bounded(text: str) -> Decision:
    """`prompt_moderate` off the event loop when it asks the endpoint (on the
    bounded pool: `busy` when it is full); the blocklist alone is checked in
    place, as it takes microseconds."""
    if not settings.ARENA_MODERATION_URL:
        return prompt_moderate(text)
    return await _bounded().call(text)


def _remote(text: str) -> Decision:
    import httpx

    key = (
        os.environ.get(settings.ARENA_MODERATION_KEY_ENV, "")
        if settings.ARENA_MODERATION_KEY_ENV
        else ""
    )
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(
            settings.ARENA_MODERATION_URL,
            json={"input": text, "model": settings.ARENA_MODERATION_MODEL},
            headers=headers,
            timeout=settings.ARENA_MODERATION_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        results = response.json()["results"]
        flagged = [r for r in results if r.get("flagged")]
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        log.warning("moderation endpoint failed: %s", exc)
        if settings.ARENA_MODERATION_FAIL == "closed":
            return Decision(True, "moderation_unavailable")
        return Decision(False)
    if flagged:
        categories = sorted(k for k, v in (flagged[0].get("categories") or {}).items() if v)
        return Decision(True, ", ".join(categories) or "flagged")
    return Decision(False)
