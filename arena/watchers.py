"""Who watches what: a web process's sockets per visitor and per battle (the
socket caps), and whether anybody at all still watches a battle, so that the
answers of a battle nobody has watched for ARENA_ORPHAN_GRACE_SECONDS are
stopped instead of generating for no one.

The socket counts are kept per event loop, in memory (one per web process
when served): a visitor's sockets spread over several web processes are
capped in each. Whether a battle is watched anywhere is shared through Redis
when REDIS_URL is set: each process watching a battle holds its own entry in
the battle's sorted set `arena:watched:<battle>`, scored with the time it
lapses and renewed every RENEW_SECONDS; an orderly leave removes the entry at
once, and the entries of a process that crashed lapse after LAPSE_SECONDS.
Without Redis there is one process, and its own count is the answer.

Nothing here sleeps in a task: the grace period and the renewals are timer
callbacks, so an event loop can close at any moment without pending tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Protocol

import redis
import redis.exceptions
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from arena.concurrency import per_loop

log = logging.getLogger(__name__)
RENEW_SECONDS = 10.0
LAPSE_SECONDS = 3 * RENEW_SECONDS
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
OrphanHandler = Callable[[str], Awaitable[None]]


class Presence(Protocol):
    """Whether a battle is watched by any web process."""

    def enter(self, token: str, battles: list[str]) -> None: ...
    def leave(self, token: str, battle: str) -> None: ...
    def watched(self, battle: str) -> bool: ...


class LocalPresence:
    """One web process (the embedded default): its own sockets are all there is."""

    def enter(self, token: str, battles: list[str]) -> None:
        pass

    def leave(self, token: str, battle: str) -> None:
        pass

    def watched(self, battle: str) -> bool:
        return False


class RedisPresence:
    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 1)
        )

    def enter(self, token: str, battles: list[str]) -> None:
        lapses = time.time() + LAPSE_SECONDS
        pipe = self._redis.pipeline(transaction=False)
        for battle in battles:
            pipe.zadd(_key(battle), {token: lapses})
            pipe.expire(_key(battle), int(LAPSE_SECONDS) + 1)
        pipe.execute()

    def leave(self, token: str, battle: str) -> None:
        self._redis.zrem(_key(battle), token)

    def watched(self, battle: str) -> bool:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zremrangebyscore(_key(battle), "-inf", time.time())
        pipe.zcard(_key(battle))
        _, count = pipe.execute()
        return bool(count)


def _key(battle: str) -> str:
    return f"arena:watched:{battle}"


@cache
def presence() -> Presence:
    return RedisPresence(settings.REDIS_URL) if settings.REDIS_URL else LocalPresence()


@cache
def _redis_thread() -> ThreadPoolExecutor:
    # One thread: a leave and the next enter of a battle reach Redis in order.
    return ThreadPoolExecutor(1, thread_name_prefix="arena-watchers")


class Watchers:
    """One event loop's sockets: per visitor, per battle."""

    def __init__(self, on_orphan: OrphanHandler) -> None:
        self.token = uuid.uuid4().hex  # this loop's entries in Redis
        self.visitors: dict[str, int] = {}
        self.battles: dict[str, set[object]] = {}
        self._on_orphan = on_orphan
        self._loop = asyncio.get_running_loop()
        self._renewal: asyncio.TimerHandle | None = None
        self._checks: set[asyncio.Task[None]] = set()

    # --- sockets per visitor ------------------------------------------------

    def visitor_enter(self, key: str) -> bool:
        """One more socket of this visitor; False (not counted) past the cap."""
        count = self.visitors.get(key, 0)
        if count >= settings.ARENA_SOCKETS_PER_VISITOR:
            return False
        self.visitors[key] = count + 1
        return True

    def visitor_leave(self, key: str) -> None:
        count = self.visitors.get(key, 0) - 1
        if count > 0:
            self.visitors[key] = count
        else:
            self.visitors.pop(key, None)

    # --- sockets per battle -------------------------------------------------

    def battle_enter(self, battle: str, sink: object) -> bool:
        """`sink` watches `battle`; False (not counted) past the cap."""
        sinks = self.battles.get(battle)
        if sinks is None:
            self.battles[battle] = {sink}
            self._redis(presence().enter, self.token, [battle])
            self._renew_ensure()
            return True
        if sink not in sinks and len(sinks) >= settings.ARENA_SOCKETS_PER_BATTLE:
            return False
        sinks.add(sink)
        return True

    def battle_leave(self, battle: str, sink: object) -> None:
        """`sink` no longer watches `battle`; the last one starts its grace period."""
        sinks = self.battles.get(battle)
        if sinks is None:
            return
        sinks.discard(sink)
        if sinks:
            return
        del self.battles[battle]
        self._redis(presence().leave, self.token, battle)
        self._loop.call_later(settings.ARENA_ORPHAN_GRACE_SECONDS, self._grace_over, battle)

    def _grace_over(self, battle: str) -> None:
        if battle in self.battles:  # a socket of this process came back
            return
        task = self._loop.create_task(self._orphan_check(battle))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _orphan_check(self, battle: str) -> None:
        try:
            elsewhere = await self._loop.run_in_executor(
                _redis_thread(), presence().watched, battle
            )
        except REDIS_ERRORS as exc:
            # Unknown: the answers go on (they end by themselves) rather than
            # stopping under a visitor who may be watching.
            log.warning("could not tell whether battle %s is watched: %r", battle, exc)
            return
        if elsewhere or battle in self.battles:
            return
        try:
            await self._on_orphan(battle)
        except Exception:
            log.exception("stopping the answers of unwatched battle %s failed", battle)

    # --- Redis --------------------------------------------------------------

    def _renew_ensure(self) -> None:
        if self._renewal is None and not isinstance(presence(), LocalPresence):
            self._renewal = self._loop.call_later(RENEW_SECONDS, self._renew)

    def _renew(self) -> None:
        self._renewal = None
        if self.battles:
            self._redis(presence().enter, self.token, list(self.battles))
            self._renew_ensure()

    def _redis(self, call: Callable[..., None], *args: object) -> None:
        """`call` on the Redis thread, not waited for; a failure is logged
        (the next renewal, or the lapse, puts it right)."""
        if isinstance(presence(), LocalPresence):
            return
        # Submitted to the thread, not through the loop: nothing comes back
        # to a loop that may be closed by then.
        _redis_thread().submit(_logged, call, *args)


def _logged(call: Callable[..., None], *args: object) -> None:
    try:
        call(*args)
    except Exception as exc:  # Redis away or refusing: the lapse puts it right
        log.warning("battle watchers: Redis call failed: %r", exc)


@per_loop
def loop_watchers(on_orphan: OrphanHandler) -> Watchers:
    """The running loop's watchers; `on_orphan(battle)` stops a battle's
    answers once nobody has watched it for the grace period."""
    return Watchers(on_orphan)
