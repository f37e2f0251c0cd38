"""Cooperative cancellation flags, checked by a generation at each delta.

With Redis configured the flag is a short-lived Redis key, seen by workers in
other processes; in the embedded default it is a set in this process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Protocol

from django.conf import settings

from arena.concurrency import daemon

log = logging.getLogger(__name__)
KEY_TTL_SECONDS = 600


class CancelFlags(Protocol):
    def request(self, answer_id: int) -> None: ...
    def requested(self, answer_id: int) -> bool: ...
    def requested_among(self, answer_ids: list[int]) -> set[int]: ...


class MemoryCancelFlags:
    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._lock = threading.Lock()

    def request(self, answer_id: int) -> None:
        with self._lock:
            self._ids.add(answer_id)

    def requested(self, answer_id: int) -> bool:
        with self._lock:
            return answer_id in self._ids

    def requested_among(self, answer_ids: list[int]) -> set[int]:
        with self._lock:
            return self._ids.intersection(answer_ids)


class RedisCancelFlags:
    def __init__(self, url: str) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._warned_at = 0.0
        # Fail fast and reconnect on the next call: a generation checks often.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 1)
        )

    def request(self, answer_id: int) -> None:
        # A failure is raised: the visitor is told the stop did not reach the worker.
        self._redis.set(f"arena:cancel:{answer_id}", 1, ex=KEY_TTL_SECONDS)

    def requested(self, answer_id: int) -> bool:
        return answer_id in self.requested_among([answer_id])

    def requested_among(self, answer_ids: list[int]) -> set[int]:
        import redis.exceptions

        try:
            found: list[bytes | None] = self._redis.mget(  # type: ignore[assignment]
                [f"arena:cancel:{i}" for i in answer_ids]
            )
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # Redis is away: nobody could have asked to stop meanwhile, so the
            # answers go on rather than failing for want of a flag.
            if time.monotonic() - self._warned_at > 5:
                self._warned_at = time.monotonic()
                log.warning("cancel flags unreachable for answers %s: %r", answer_ids, exc)
            return set()
        return {i for i, value in zip(answer_ids, found, strict=True) if value is not None}


class CancelWatch:
    """The answers this process is generating, checked for a stop all at once
    by one thread every `interval` seconds: one Redis round trip per process
    per interval instead of one per answer per delta (bench/load.py)."""

    def __init__(self, flags: CancelFlags, interval: float) -> None:
        self._flags = flags
        self._interval = interval
        self._active: set[int] = set()
        self._stopped: set[int] = set()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, answer_id: int, on_stop: Callable[[], None] | None = None) -> None:
        """Watch `answer_id`; `on_stop` is called once (from the watch's
        thread) when a stop is asked for it."""
        with self._lock:
            self._active.add(answer_id)
            if on_stop is not None:
                self._callbacks[answer_id] = on_stop
            if self._thread is None or not self._thread.is_alive():
                self._thread = daemon("cancel-watch", self._run)

    def unwatch(self, answer_id: int) -> None:
        with self._lock:
            self._active.discard(answer_id)
            self._stopped.discard(answer_id)
            self._callbacks.pop(answer_id, None)

    def requested(self, answer_id: int) -> bool:
        return answer_id in self._stopped

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                ids = list(self._active)
            if not ids:
                continue
            try:
                stopped = self._flags.requested_among(ids)
            except Exception:
                log.exception("checking cancel flags failed")
                continue
            with self._lock:
                fresh = (stopped & self._active) - self._stopped
                self._stopped |= fresh
                calls = [self._callbacks[i] for i in fresh if i in self._callbacks]
            for call in calls:
                try:
                    call()
                except Exception:
                    log.exception("a stop callback failed")


@cache
def cancel_watch() -> CancelWatch:
    return CancelWatch(cancel_flags(), settings.ARENA_DELTA_INTERVAL_MS / 1000)


@cache
def cancel_flags() -> CancelFlags:
    if settings.REDIS_URL:
        return RedisCancelFlags(settings.REDIS_URL)
    return MemoryCancelFlags()
