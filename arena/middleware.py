"""Middleware of every request: a Content-Security-Policy on every response
Django makes (pages, the admin, error pages), the second line behind
arena.markdown, so model output that slipped an image, a script or a form
past the sanitiser still cannot make the browser send anything to another
host; and X-Forwarded-Proto believed only from a trusted proxy."""

from __future__ import annotations

from collections.abc import Awaitable
from functools import cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

# 'self' also covers the page's own ws:/wss: origin (CSP Level 3; checked in
# chromium by tests/e2e/test_csp_browser.py). Styles allow inline attributes:
# the Markdown tables' text-align, the leaderboard's SVG charts and the
# Django admin set style="" attributes; a style cannot send a request that
# img-src/default-src would not already refuse. Django's admin keeps its data
# in <script type="application/json"> islands, which script-src does not run.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class _AroundView:
    """A middleware that runs `before` on the request and `after` on the
    response, for sync and async views alike."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        self.before(request)
        if self.is_async:
            return self._acall(request)
        return self.after(self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        return self.after(await self.get_response(request))

    def before(self, request: HttpRequest) -> None:
        pass

    def after(self, response: HttpResponseBase) -> HttpResponseBase:
        return response


class ContentSecurityPolicyMiddleware(_AroundView):
    """Sets the policy unless a view set its own (none does today)."""

    def after(self, response: HttpResponseBase) -> HttpResponseBase:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


class ForwardedProtoMiddleware(_AroundView):
    """X-Forwarded-Proto is believed only from a trusted proxy: from any other
    peer it is dropped before SecurityMiddleware reads it, so a client that
    reaches the server directly cannot pass plain HTTP off as HTTPS (Django's
    SECURE_PROXY_SSL_HEADER alone trusts whoever sends the header)."""

    def before(self, request: HttpRequest) -> None:
        _forwarded_proto_scrub(request)


def _forwarded_proto_scrub(request: HttpRequest) -> None:
    if "HTTP_X_FORWARDED_PROTO" not in request.META:
        return
    peer = str(request.META.get("REMOTE_ADDR") or "")
    if not peer_is_trusted(peer, tuple(settings.ARENA_TRUSTED_PROXIES)):
        del request.META["HTTP_X_FORWARDED_PROTO"]


@cache
def _networks(trusted: tuple[str, ...]) -> tuple[IPv4Network | IPv6Network, ...]:
    return tuple(ip_network(t, strict=False) for t in trusted)


def peer_is_trusted(peer: str, trusted: tuple[str, ...]) -> bool:
    try:
        address = ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in _networks(trusted))
