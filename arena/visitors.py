"""Who a visitor is, without storing anything on a page view.

A visitor id is a random 128-bit token in a signed cookie (`arena_visitor`),
set by the page and read by the websocket. The database never holds the id
nor the client's address: only keyed hashes of them (`visitor_key`,
`network_key`), so a leaked table names no one and a guessed id cannot be
checked without the server's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse

COOKIE = "arena_visitor"
# Its own salt: a value signed for another purpose (a session, a form) is no visitor.
COOKIE_SALT = "arena.visitors.cookie"
_ID = re.compile(r"[0-9a-f]{32}")
# 40 hex digits (160 bits) of HMAC-SHA256: no collision among any number of
# visitors an arena will see, and short enough for the 64-character columns.
KEY_CHARS = 40
# IPv6 hands a subscriber a /64 at least: the addresses in one are one network.
IPV6_PREFIX = 64


def visitor_new() -> str:
    return secrets.token_hex(16)


def visitor_cookie_value(visitor_id: str) -> str:
    return signing.TimestampSigner(salt=COOKIE_SALT).sign(visitor_id)


def visitor_from_cookie(value: str | None) -> str | None:
    """The visitor id in a cookie value; None when missing, tampered, expired
    or not an id."""
    if not value:
        return None
    try:
        visitor_id = signing.TimestampSigner(salt=COOKIE_SALT).unsign(
            value, max_age=settings.ARENA_VISITOR_SECONDS
        )
    except signing.BadSignature:  # SignatureExpired is one too
        return None
    return visitor_id if _ID.fullmatch(visitor_id) else None


def visitor_cookie_ensure(request: HttpRequest, response: HttpResponse) -> None:
    """Give the visitor an id when the request carries no valid one. Nothing
    is written to the database: a page view costs no row."""
    if visitor_from_cookie(request.COOKIES.get(COOKIE)) is not None:
        return
    response.set_cookie(
        COOKIE,
        visitor_cookie_value(visitor_new()),
        max_age=settings.ARENA_VISITOR_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=settings.ARENA_PRODUCTION,
    )


def keyed_hash(*, secret: str, purpose: str, value: str) -> str:
    """HMAC-SHA256 of `value` under a key derived from `secret`, per purpose.
    Pure: arena/migrations/0006_visitor.py holds a copy of it."""
    key = hashlib.sha256(b"arena.visitors.key" + secret.encode()).digest()
    message = f"{purpose}:{value}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:KEY_CHARS]


def visitor_key(visitor_id: str) -> str:
    """What the database stores for a visitor ("" for none)."""
    if not visitor_id:
        return ""
    return keyed_hash(secret=settings.SECRET_KEY, purpose="visitor", value=visitor_id)


def network_of(ip: str) -> str:
    """The network an address stands for: an IPv4 address itself, an IPv6
    address's /64 (an IPv4-mapped one is its IPv4 address); "" if unparsable."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def network_key(ip: str) -> str:
    """What the database (and the vote counters) store for a client address:
    a keyed hash of its network, never the address ("" for none)."""
    network = network_of(ip)
    if not network:
        return ""
    return keyed_hash(secret=settings.SECRET_KEY, purpose="network", value=network)
