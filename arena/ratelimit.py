"""Rate limits per visitor and per client IP: fixed windows, counted in Redis
(shared by every web process) or in this process when there is no Redis.

When Redis is configured but unreachable, ARENA_RATE_LIMIT_FAIL decides:
"open" counts in this process meanwhile (limits per web process, logged),
"closed" refuses the action (the visitor is told the service is unavailable).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from django.conf import settings

log = logging.getLogger(__name__)
# After a Redis failure, count in this process for this long before trying
# Redis again, so an outage costs one connection attempt per pause, not one per hit.
REDIS_PAUSE_SECONDS = 5.0


class Counter(Protocol):
    def hit(self, key: str, window: int) -> tuple[int, float]:
        """Count one hit in the current window; (hits so far, seconds left)."""
        ...

    def peek(self, key: str, window: int) -> tuple[int, float]:
        """The hits so far in the current window, counting none; (hits, seconds left)."""
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

    def peek(self, key: str, window: int) -> tuple[int, float]:
        now = time.time()
        slot = int(now // window)
        with self._lock:
            old_slot, count = self._hits.get(key, (slot, 0))
        return (count if old_slot == slot else 0), (slot + 1) * window - now


class RedisCounter:
    def __init__(self, url: str) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Fail fast: a visitor waits on this before every counted action.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 1)
        )

    def hit(self, key: str, window: int) -> tuple[int, float]:
        now = time.time()
        slot = int(now // window)
        name = f"arena:rate:{key}:{slot}"
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, window + 1)
        count, _ = pipe.execute()
        return int(count), (slot + 1) * window - now

    def peek(self, key: str, window: int) -> tuple[int, float]:
        now = time.time()
        slot = int(now // window)
        count: Any = self._redis.get(f"arena:rate:{key}:{slot}")
        return int(count or 0), (slot + 1) * window - now


class FallbackCounter:
    """Redis, or this process's own counts while Redis is unreachable (fail
    open); with `fail_closed` a Redis failure is raised instead."""

    def __init__(self, primary: Counter, *, fail_closed: bool) -> None:
        self._primary = primary
        self._local = MemoryCounter()
        self._fail_closed = fail_closed
        self._paused_until = 0.0

    def hit(self, key: str, window: int) -> tuple[int, float]:
        import redis.exceptions

        if time.monotonic() >= self._paused_until:
            try:
                return self._primary.hit(key, window)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                if self._fail_closed:
                    raise
                log.warning(
                    "rate limits: Redis is unreachable; counting in this process for %.0f s",
                    REDIS_PAUSE_SECONDS,
                )
                self._paused_until = time.monotonic() + REDIS_PAUSE_SECONDS
        return self._local.hit(key, window)

    def peek(self, key: str, window: int) -> tuple[int, float]:
        import redis.exceptions

        if time.monotonic() >= self._paused_until:
            try:
                return self._primary.peek(key, window)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                if self._fail_closed:
                    raise
        return self._local.peek(key, window)


@cache
def counter() -> Counter:
    if not settings.REDIS_URL:
        return MemoryCounter()
    return FallbackCounter(
        RedisCounter(settings.REDIS_URL), fail_closed=settings.ARENA_RATE_LIMIT_FAIL == "closed"
    )


@cache
def daily_counter() -> Counter:
    """Counts per UTC day (the per-network vote cap), apart from `counter()`:
    its in-process fallback forgets windows by their number, and a day's
    number is far below a minute's."""
    if not settings.REDIS_URL:
        return MemoryCounter()
    return FallbackCounter(
        RedisCounter(settings.REDIS_URL), fail_closed=settings.ARENA_RATE_LIMIT_FAIL == "closed"
    )


DAY_SECONDS = 24 * 60 * 60


def daily_hit(*, key: str) -> int:
    """Count one more for `key` today (UTC); how many so far, this one included."""
    hits, _ = daily_counter().hit(f"day:{key}", DAY_SECONDS)
    return hits


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


def _login_keys(*, ip: str, username: str) -> list[str]:
    # Usernames hashed: any text a form accepts, kept out of Redis key names.
    user = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:24]
    return [f"login:ip:{ip}", f"login:user:{user}"]


def login_check(*, ip: str, username: str) -> Verdict:
    """Whether a staff sign-in may be tried: refused once this address or this
    username has had ARENA_ADMIN_LOGIN_FAILURES failures in the window, even
    with the right password (else guessing would go on until it succeeds).
    With ARENA_RATE_LIMIT_FAIL=closed and Redis unreachable: refused."""
    import redis.exceptions

    window = settings.ARENA_ADMIN_LOGIN_WINDOW_SECONDS
    worst = 0.0
    try:
        for key in _login_keys(ip=ip, username=username):
            failures, left = counter().peek(key, window)
            if failures >= settings.ARENA_ADMIN_LOGIN_FAILURES:
                worst = max(worst, left)
    except redis.exceptions.RedisError:
        return Verdict(False, math.ceil(REDIS_PAUSE_SECONDS))
    return Verdict(worst == 0, math.ceil(worst))


def login_failed(*, ip: str, username: str) -> None:
    """Count one failed staff sign-in against the address and the username."""
    import redis.exceptions

    try:
        for key in _login_keys(ip=ip, username=username):
            counter().hit(key, settings.ARENA_ADMIN_LOGIN_WINDOW_SECONDS)
    except redis.exceptions.RedisError:
        log.warning("admin sign-in throttle: a failure could not be counted (Redis)")


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


class TokenBucket:
    """The frames one socket may send: `rate` a second, up to `burst` at once.

    Per socket and in its process: a frame costs two float updates, no Redis
    and no thread hop, so even a flood is refused at the cost of reading it.
    Refused frames are counted too (`overdraft`, draining at the same rate):
    a client a little over the limit settles near zero, one that keeps going
    far past it climbs, and the socket can be closed on it."""

    __slots__ = ("burst", "overdraft", "rate", "stamp", "tokens")

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.overdraft = 0.0
        self.stamp = now

    def take(self, now: float) -> bool:
        """One frame at `now` (monotonic seconds): True if it may be handled."""
        refill = (now - self.stamp) * self.rate
        self.stamp = now
        tokens = self.tokens + refill
        self.tokens = tokens if tokens < self.burst else self.burst
        if self.overdraft:
            self.overdraft = max(0.0, self.overdraft - refill)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.overdraft += 1.0
        return False

    def retry_after(self) -> int:
        """Whole seconds until the next frame would be taken (at least 1)."""
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))
