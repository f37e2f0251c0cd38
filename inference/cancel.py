"""Cooperative cancellation flags, checked by a generation at each delta.

With Redis configured the flag is a short-lived Redis key, seen by workers in
other processes; in the embedded default it is a set in this process.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from typing import Protocol

from django.conf import settings

log = logging.getLogger(__name__)
KEY_TTL_SECONDS = 600


class CancelFlags(Protocol):
    def request(self, answer_id: int) -> None: ...
    def requested(self, answer_id: int) -> bool: ...


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
        import redis.exceptions

        try:
            return bool(self._redis.exists(f"arena:cancel:{answer_id}"))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # Redis is away: nobody could have asked to stop meanwhile, so the
            # answer goes on rather than failing for want of a flag.
            if time.monotonic() - self._warned_at > 5:
                self._warned_at = time.monotonic()
                log.warning("cancel flags unreachable for answer %s: %r", answer_id, exc)
            return False


@cache
def cancel_flags() -> CancelFlags:
    if settings.REDIS_URL:
        return RedisCancelFlags(settings.REDIS_URL)
    return MemoryCancelFlags()
