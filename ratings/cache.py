"""What the leaderboard keeps outside the database: boards computed for a
filter no refresh precomputes, the category and source lists (each with a
TTL), the refresh lock and the vote counter that triggers refreshes.

In Redis when REDIS_URL is set, shared by every web and worker process;
otherwise in this process (the embedded default runs in one). While a
configured Redis is unreachable this process's own store stands in (logged),
so an outage costs locality, never a page.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, Protocol, cast

import redis
import redis.exceptions
from django.conf import settings

log = logging.getLogger(__name__)

# After a Redis failure, use this process's store for this long before trying again.
REDIS_PAUSE_SECONDS = 5.0
# A computation whose process died frees its key after this long.
COMPUTE_LOCK_SECONDS = 120.0
# Fits running at once in one process, over all keys: 20 requests for 20
# different custom boards must not take 20 database connections and threads.
COMPUTE_SLOTS = 2
_POLL_SECONDS = 0.05
_MEMORY_SWEEP_AT = 256

_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Delete or extend a lock only while it still holds our token: an expired lock
# may have been taken by another process since.
_UNLOCK = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class Store(Protocol):
    def get(self, key: str) -> Any | None: ...
    def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Keep value for ttl seconds (None: until replaced)."""
        ...

    def delete(self, key: str) -> None: ...
    def incr(self, key: str) -> int: ...
    def lock(self, key: str, ttl: float) -> str | None:
        """A token when the lock was free (now ours for ttl seconds), else None."""
        ...

    def renew(self, key: str, token: str, ttl: float) -> bool: ...
    def unlock(self, key: str, token: str) -> None: ...


class MemoryStore:
    """Values with expiry times in a dict; one lock makes each call atomic."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> Any | None:
        item = self._items.get(key)
        if item is None or item[0] <= time.monotonic():
            self._items.pop(key, None)
            return None
        return item[1]

    def get(self, key: str) -> Any | None:
        with self._lock:
            return self._live(key)

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._items) >= _MEMORY_SWEEP_AT:  # keys of past versions are never read again
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[key] = (float("inf") if ttl is None else now + ttl, value)

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def incr(self, key: str) -> int:
        with self._lock:
            value = int(self._live(key) or 0) + 1
            self._items[key] = (float("inf"), value)
            return value

    def lock(self, key: str, ttl: float) -> str | None:
        with self._lock:
            if self._live(key) is not None:
                return None
            token = secrets.token_hex(8)
            self._items[key] = (time.monotonic() + ttl, token)
            return token

    def renew(self, key: str, token: str, ttl: float) -> bool:
        with self._lock:
            if self._live(key) != token:
                return False
            self._items[key] = (time.monotonic() + ttl, token)
            return True

    def unlock(self, key: str, token: str) -> None:
        with self._lock:
            if self._live(key) == token:
                del self._items[key]


class RedisStore:
    """Values as JSON strings with a TTL; locks are SET NX PX with a token."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._unlock = self._redis.register_script(_UNLOCK)
        self._renew = self._redis.register_script(_RENEW)

    def get(self, key: str) -> Any | None:
        raw = cast(bytes | None, self._redis.get(key))
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        px = None if ttl is None else max(1, int(ttl * 1000))
        self._redis.set(key, json.dumps(value), px=px)

    def delete(self, key: str) -> None:
        self._redis.delete(key)

    def incr(self, key: str) -> int:
        return int(cast(int, self._redis.incr(key)))

    def lock(self, key: str, ttl: float) -> str | None:
        token = secrets.token_hex(8)
        done = self._redis.set(key, token, nx=True, px=max(1, int(ttl * 1000)))
        return token if done else None

    def renew(self, key: str, token: str, ttl: float) -> bool:
        return bool(self._renew(keys=[key], args=[token, max(1, int(ttl * 1000))]))

    def unlock(self, key: str, token: str) -> None:
        self._unlock(keys=[key], args=[token])


class FallbackStore:
    """Redis, or this process's store for a pause after Redis failed."""

    def __init__(self, primary: Store) -> None:
        self._primary = primary
        self._local = MemoryStore()
        self._paused_until = 0.0

    def _call(self, name: str, *args: Any) -> Any:
        if time.monotonic() >= self._paused_until:
            try:
                return getattr(self._primary, name)(*args)
            except _REDIS_ERRORS:
                log.warning(
                    "leaderboard cache: Redis is unreachable; using this process for %.0f s",
                    REDIS_PAUSE_SECONDS,
                )
                self._paused_until = time.monotonic() + REDIS_PAUSE_SECONDS
        return getattr(self._local, name)(*args)

    def get(self, key: str) -> Any | None:
        return self._call("get", key)

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        self._call("set", key, value, ttl)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def incr(self, key: str) -> int:
        return int(self._call("incr", key))

    def lock(self, key: str, ttl: float) -> str | None:
        token: str | None = self._call("lock", key, ttl)
        return token

    def renew(self, key: str, token: str, ttl: float) -> bool:
        return bool(self._call("renew", key, token, ttl))

    def unlock(self, key: str, token: str) -> None:
        self._call("unlock", key, token)


@cache
def store() -> Store:
    if not settings.REDIS_URL:
        return MemoryStore()
    return FallbackStore(RedisStore(settings.REDIS_URL))


class Held:
    """A lock this process holds; renew it during long work."""

    def __init__(self, key: str, token: str, ttl: float) -> None:
        self.key, self.token, self.ttl = key, token, ttl

    def renew(self) -> bool:
        return store().renew(self.key, self.token, self.ttl)


@contextmanager
def lock_held(key: str, *, ttl: float) -> Iterator[Held | None]:
    """The lock, or None when someone else holds it; released on exit."""
    token = store().lock(key, ttl)
    if token is None:
        yield None
        return
    try:
        yield Held(key, token, ttl)
    finally:
        store().unlock(key, token)


class Computing(Exception):
    """Another request is computing this value: retry in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"being computed; retry in {retry_after} s")
        self.retry_after = retry_after


_slots = threading.BoundedSemaphore(COMPUTE_SLOTS)


def single_flight(key: str, compute: Callable[[], Any], *, ttl: float, wait: float) -> Any:
    """The cached value of `key`, computing it once at a time across threads
    and processes: whoever takes the key's lock computes, the others wait up
    to `wait` seconds for the value, then get `Computing`. The value must be
    JSON (it is stored as such in Redis)."""
    value = store().get(key)
    if value is not None:
        return value
    deadline = time.monotonic() + wait
    while True:
        with lock_held(f"{key}:lock", ttl=COMPUTE_LOCK_SECONDS) as held:
            if held is not None:
                value = store().get(key)  # set by the holder we waited for
                if value is None:
                    value = _compute_in_slot(compute, deadline)
                    store().set(key, value, ttl)
                return value
        if time.monotonic() >= deadline:
            raise Computing(retry_after=max(1, round(wait)))
        time.sleep(_POLL_SECONDS)
        value = store().get(key)
        if value is not None:
            return value


def _compute_in_slot(compute: Callable[[], Any], deadline: float) -> Any:
    if not _slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise Computing(retry_after=max(1, round(COMPUTE_LOCK_SECONDS / 20)))
    try:
        return compute()
    finally:
        _slots.release()
