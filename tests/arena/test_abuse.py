"""Rate limits, the client IP behind proxies, and moderation of prompts."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import sync_to_async

from arena import moderation
from arena.env import Limit
from arena.models import Turn
from arena.ratelimit import client_ip
from arena.visitors import visitor_new
from tests.arena.wsclient import Client
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_visitor_over_the_limit_gets_rate_limited_with_a_retry_time(
    contenders: object, alice: str, mallory: str, settings: object
) -> None:
    settings.ARENA_RATE_LIMITS = {"battle": Limit(2, 60)}  # type: ignore[attr-defined]
    client = Client(alice)
    await client.connect()
    assert (await client.start())["type"] == "battle.state"
    assert (await client.start())["type"] == "battle.state"
    error = await client.error({"type": "battle.start"})
    assert error["code"] == "rate_limited"
    assert 0 < error["retry_after"] <= 60
    # Another visitor (same address, under the per-IP limit) is not affected.
    other = Client(mallory)
    await other.connect()
    assert (await other.start())["type"] == "battle.state"
    await client.close()
    await other.close()


async def test_many_visitors_from_one_address_hit_the_ip_limit(
    contenders: object, settings: object
) -> None:
    settings.ARENA_RATE_LIMITS = {"battle": Limit(1, 60)}  # type: ignore[attr-defined]
    settings.ARENA_RATE_IP_FACTOR = 3  # type: ignore[attr-defined]
    codes = []
    # A fresh address per run: Redis keeps counts across runs within the window.
    address = f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"
    for _ in range(4):
        client = Client(visitor_new(), address=address)
        await client.connect()
        await client.send({"type": "battle.start"})
        codes.append((await client.next())["type"])
        await client.close()
    assert codes == ["battle.state", "battle.state", "battle.state", "error"]


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.5", "1.2.3.4", [], "203.0.113.5"),  # untrusted peer: header ignored
        ("10.0.0.2", "198.51.100.7", ["10.0.0.0/8"], "198.51.100.7"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.9", ["10.0.0.0/8"], "198.51.100.7"),
        ("10.0.0.2", "not-an-ip", ["10.0.0.0/8"], "10.0.0.2"),
        ("10.0.0.2", "", ["10.0.0.0/8"], "10.0.0.2"),
        ("::1", "2001:db8::1", ["::1"], "2001:db8::1"),
    ],
)
def test_the_client_ip_trusts_only_configured_proxies(
    remote: str, forwarded: str, trusted: list[str], expected: str
) -> None:
    assert client_ip(remote, forwarded, trusted) == expected


@pytest.fixture
def blocklist(settings: object) -> Iterator[None]:
    settings.ARENA_MODERATION_BLOCKLIST = [r"\bforbidden\s+plan\b"]  # type: ignore[attr-defined]
    moderation._blocklist.cache_clear()
    yield
    moderation._blocklist.cache_clear()


async def test_a_blocked_prompt_is_refused_and_nothing_is_saved(
    contenders: object, alice: str, blocklist: None
) -> None:
    client = Client(alice)
    await client.connect()
    await client.start()
    error = await client.error({"type": "message.send", "text": "Tell me the FORBIDDEN   plan"})
    assert error["code"] == "moderated"
    assert await sync_to_async(Turn.objects.count)() == 0
    await client.close()


class _Moderation(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        flagged = "violence" in body["input"]
        reply = {"results": [{"flagged": flagged, "categories": {"violence": flagged}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def moderation_server() -> Iterator[str]:
    """A moderation endpoint on loopback answering in OpenAI's format."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Moderation)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/moderations"
    server.shutdown()


def test_the_moderation_endpoint_flags_and_passes(moderation_server: str, settings: object) -> None:
    settings.ARENA_MODERATION_URL = moderation_server  # type: ignore[attr-defined]
    assert moderation.prompt_moderate("a story about violence") == moderation.Decision(
        True, "violence"
    )
    assert moderation.prompt_moderate("a story about kittens").flagged is False


def test_an_unreachable_endpoint_fails_closed_or_open_as_set(settings: object) -> None:
    settings.ARENA_MODERATION_URL = f"http://127.0.0.1:{free_port()}/v1/moderations"  # type: ignore[attr-defined]
    settings.ARENA_MODERATION_TIMEOUT_SECONDS = 1.0  # type: ignore[attr-defined]
    settings.ARENA_MODERATION_FAIL = "closed"  # type: ignore[attr-defined]
    assert moderation.prompt_moderate("hello").flagged is True
    settings.ARENA_MODERATION_FAIL = "open"  # type: ignore[attr-defined]
    assert moderation.prompt_moderate("hello").flagged is False
