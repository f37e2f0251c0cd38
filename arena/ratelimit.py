"""Rate limits per visitor and per client IP: fixed windows, counted in Redis
(shared by every web process) or in this process when there is no Redis."""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from django.conf import settings


class Counter(Protocol):
    def hit(self, key: str, window: int) -> tuple[int, float]:
        """Count one hit in the current window; (hits so far, seconds left)."""
        ...


class MemoryCounter:
    def __init__(self) -> None:
        self._hits: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, window: int) -> tuple[int, float]:
        now = time.time()
        slot = int(now // window)
        with self._lock:
            if len(self._hits) > 100_000:  # forget old windows
                self._hits = {k: v for k, v in self._hits.items() if v[0] >= slot}
            old_slot, count = self._hits.get(key, (slot, 0))
            count = count + 1 if old_slot == slot else 1
            self._hits[key] = (slot, count)
        return count, (slot + 1) * window - now


class RedisCounter:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def hit(self, key: str, window: int) -> tuple[int, float]:
        now = time.time()
        slot = int(now // window)
        name = f"arena:rate:{key}:{slot}"
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, window + 1)
        count, _ = pipe.execute()
        return int(count), (slot + 1) * window - now


@cache
def counter() -> Counter:
    return RedisCounter(settings.REDIS_URL) if settings.REDIS_URL else MemoryCounter()


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0


def rate_check(*, action: str, visitor: str, ip: str) -> Verdict:
    """Count an action by this visitor and this IP; refuse it past either limit.

    The per-IP limit is the visitor limit times ARENA_RATE_IP_FACTOR: several
    people behind one NAT share an address."""
    limit = settings.ARENA_RATE_LIMITS.get(action)
    if limit is None:
        return Verdict(True)
    ip_count = limit.count * settings.ARENA_RATE_IP_FACTOR
    worst = 0.0
    for key, allowed in ((f"v:{visitor}:{action}", limit.count), (f"ip:{ip}:{action}", ip_count)):
        if not key.split(":")[1]:
            continue
        hits, left = counter().hit(key, limit.seconds)
        if hits > allowed:
            worst = max(worst, left)
    return Verdict(worst == 0, math.ceil(worst))


def client_ip(remote: str, forwarded_for: str, trusted: list[str]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy, in
    which case the right-most address in X-Forwarded-For that is not trusted."""
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not remote or not is_trusted(remote):
        return remote
    chain = [a.strip() for a in forwarded_for.split(",") if a.strip()]
    for addr in reversed(chain):
        if not is_trusted(addr):
            try:
                return str(ipaddress.ip_address(addr))
            except ValueError:
                return remote  # a garbled header is not trusted
    return remote
