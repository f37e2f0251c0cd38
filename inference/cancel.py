"""Cooperative cancellation flags, checked by a generation at each delta.

With Redis configured the flag is a short-lived Redis key, seen by workers in
other processes; in the embedded default it is a set in this process.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Protocol

from django.conf import settings

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

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def request(self, answer_id: int) -> None:
        self._redis.set(f"arena:cancel:{answer_id}", 1, ex=KEY_TTL_SECONDS)

    def requested(self, answer_id: int) -> bool:
        return bool(self._redis.exists(f"arena:cancel:{answer_id}"))


@cache
def cancel_flags() -> CancelFlags:
    if settings.REDIS_URL:
        return RedisCancelFlags(settings.REDIS_URL)
    return MemoryCancelFlags()
