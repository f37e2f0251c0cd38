"""A hostile visitor against the real services stack.

Its own daphne process (started as `make run` starts it: the websocket frame
limits, the default rate limits), the session's Celery worker, PostgreSQL and
Redis; contenders on the vLLM stand-in (tests/inference/servers.py), a real
HTTP server on loopback whose first token can be held back. Everything here
goes over real sockets: plain HTTP and the `websockets` client, as a script
would, never the ASGI app in-process.

Each test plays one attack from the trust issue and asserts what the visitor
gets and what the database keeps. The figures (latencies, counts) are written
to var/test-artifacts/hostile.json; `pytest -s tests/test_hostile.py` prints
them too. The browser half of "model output cannot phone home" (chromium
not fetching a remote image, the CSP) is tests/e2e/test_csp_browser.py.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from arena.models import Answer, Battle, Turn, Visitor, Vote
from inference.models import Contender, Endpoint, Engine
from tests.conftest import ARTIFACTS, ON_SERVICES, Process, child_env, daphne_start
from tests.inference.servers import VLLMStandIn

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not ON_SERVICES, reason="plays against PostgreSQL, Redis and Celery"),
    pytest.mark.timeout(240),
]
FIGURES: dict[str, Any] = {}
FINGERPRINTS = ("prompt_tokens", "ttft_ms", "duration_ms", "tokens_per_s")


@pytest.fixture(scope="module", autouse=True)
def _figures_written() -> Iterator[None]:
    yield
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "hostile.json").write_text(json.dumps(FIGURES, indent=2))
    print("\nhostile visitor figures:", json.dumps(FIGURES, indent=2))


@pytest.fixture(scope="module")
def server(django_db_setup: None, celery_worker: Process) -> Iterator[str]:
    """A daphne of its own, so the attacks' rate-limit counts touch no other
    test's server; its counters in Redis are cleared afterwards."""
    process, url = daphne_start("hostile-daphne", child_env(ARENA_ORPHAN_GRACE_SECONDS="5"))
    yield url
    process.stop()
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter("arena:rate:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def standin(db: None) -> Iterator[VLLMStandIn]:
    """Two contenders on the vLLM stand-in; a battle is always between them."""
    vllm = VLLMStandIn()
    endpoint = Endpoint.objects.create(name="standin", base_url=vllm.url)
    for name in ("north", "south"):
        Contender.objects.create(
            name=name,
            engine=Engine.OPENAI,
            endpoint=endpoint,
            model=vllm.behaviour.base,
            system_prompt=f"You are {name}.",
            params={"max_tokens": 8, "temperature": 0.0},
        )
    yield vllm
    vllm.stop()


# --- a visitor, as a script plays one --------------------------------------


def _get(base: str, path: str, cookie: str = "") -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _visitor_cookie(base: str) -> str:
    status, headers, _ = _get(base, "/")
    assert status == 200
    cookie = headers.get("set-cookie", "")
    assert cookie.startswith("arena_visitor="), headers
    return cookie.split(";", 1)[0]


class Script:
    """One visitor's socket: raw frames in, events out (batched frames unrolled)."""

    def __init__(self, base: str, cookie: str | None = None) -> None:
        self.cookie = cookie or _visitor_cookie(base)
        opened = connect(
            "ws://" + base.removeprefix("http://") + "/ws/battle/",
            additional_headers={"Cookie": self.cookie, "Origin": base},
            open_timeout=30,
            max_size=2**22,
            proxy=None,
        )
        self.ws: ClientConnection = opened.__enter__()  # closed by close()
        self.frames: list[str] = []

    def send(self, event: dict[str, Any] | str | bytes) -> None:
        self.ws.send(event if isinstance(event, str | bytes) else json.dumps(event))

    def next(self, timeout: float = 30) -> dict[str, Any]:
        frame = self.ws.recv(timeout=timeout)
        assert isinstance(frame, str)
        self.frames.append(frame)
        event = json.loads(frame)
        assert isinstance(event, dict), frame
        return event

    def until(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(timeout=max(deadline - time.monotonic(), 0.01))
            if event["type"] == kind:
                return event

    def answers_finished(self, timeout: float = 60) -> None:
        ended = 0
        deadline = time.monotonic() + timeout
        while ended < 2:
            event = self.next(timeout=max(deadline - time.monotonic(), 0.01))
            ended += event["type"] in ("gen.done", "gen.error")

    def start(self) -> dict[str, Any]:
        self.send({"type": "battle.start"})
        return self.until("battle.state")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def visitors(server: str) -> Iterator[list[Script]]:
    opened: list[Script] = []
    yield opened
    for v in opened:
        v.close()


def _visitor(server: str, visitors: list[Script]) -> Script:
    v = Script(server)
    visitors.append(v)
    return v


# --- the attacks --------------------------------------------------------------


def test_a_vote_on_answers_stopped_before_their_first_token_is_refused(
    server: str, standin: VLLMStandIn, visitors: list[Script]
) -> None:
    standin.behaviour.first_token_delay = 5.0
    mallory = _visitor(server, visitors)
    mallory.start()
    started = time.perf_counter()
    mallory.send({"type": "message.send", "text": "Which of you is better?"})
    mallory.send({"type": "stop"})
    deadline = time.monotonic() + 30
    while not all(a.is_finished for a in Answer.objects.all()) or Answer.objects.count() < 2:
        assert time.monotonic() < deadline, "the stopped answers never finished"
        time.sleep(0.05)
    mallory.send({"type": "vote", "choice": "a"})
    refusal = mallory.until("error")
    FIGURES["free_vote_refused_ms"] = round((time.perf_counter() - started) * 1000, 1)

    assert refusal["code"] == "empty_answer", refusal
    assert Vote.objects.count() == 0
    assert set(Answer.objects.values_list("text", flat=True)) == {""}


def test_nothing_a_visitor_receives_before_the_vote_fingerprints_a_contender(
    server: str, standin: VLLMStandIn, visitors: list[Script]
) -> None:
    alice = _visitor(server, visitors)
    alice.start()
    alice.send({"type": "message.send", "text": "Say something."})
    alice.answers_finished()
    battle = Battle.objects.get()
    alice.send({"type": "battle.resume", "battle": str(battle.pk)})  # a state after the answers
    alice.until("battle.state")
    before = list(alice.frames)
    alice.send({"type": "vote", "choice": "tie"})
    reveal = alice.until("vote.recorded")

    leaked = [f for f in before for word in FINGERPRINTS if word in f]
    FIGURES["frames_before_vote"] = len(before)
    assert before and not leaked, leaked[:3]
    assert set(reveal["models"].values()) == {"north", "south"}
    assert all("ttft_ms" in s["stats"] for s in reveal["stats"]), reveal["stats"]


def test_a_flood_of_resumes_is_refused_while_another_visitor_starts_at_once(
    server: str, standin: VLLMStandIn, visitors: list[Script]
) -> None:
    mallory, bob = _visitor(server, visitors), _visitor(server, visitors)
    mallory.start()
    battle = str(Battle.objects.get().pk)
    frame = json.dumps({"type": "battle.resume", "battle": battle})
    sent = 0
    closed_with: int | None = None

    def flood() -> None:
        nonlocal sent, closed_with
        try:
            for _ in range(3_000):
                mallory.ws.send(frame)
                sent += 1
        except ConnectionClosed as exc:
            closed_with = exc.rcvd.code if exc.rcvd else None

    flooding = threading.Thread(target=flood)
    flooding.start()
    time.sleep(0.05)  # the flood is under way
    started = time.perf_counter()
    bob.start()
    bob_ms = (time.perf_counter() - started) * 1000
    flooding.join(timeout=60)

    codes: list[str] = []
    try:
        while True:
            event = mallory.next(timeout=2)
            if event["type"] == "error":
                codes.append(event["code"])
    except (TimeoutError, ConnectionClosed):
        pass
    if closed_with is None and mallory.ws.close_code is not None:
        closed_with = mallory.ws.close_code
    FIGURES["flood"] = {
        "frames_sent": sent,
        "rate_limited_errors": codes.count("rate_limited"),
        "close_code": closed_with,
        "other_visitor_battle_start_ms": round(bob_ms, 1),
    }
    assert bob_ms < 500, FIGURES["flood"]
    assert "rate_limited" in codes, FIGURES["flood"]
    assert len(codes) < 50, "the replies to a flood are a flood of their own"


def test_twenty_custom_boards_at_once_fail_none_and_leave_the_health_check_fast(
    server: str, standin: VLLMStandIn
) -> None:
    north, south = Contender.objects.order_by("name")
    Vote.objects.bulk_create(
        [
            Vote(
                contender_a=north if i % 3 else south,
                contender_b=south if i % 3 else north,
                choice=("a", "b", "tie")[i % 3],
                anonymous=True,
                source=f"source-{i % 5}",
                session_key=f"voter-{i % 40}",
            )
            for i in range(600)
        ]
    )
    queries = [
        f"/leaderboard/leaderboard.json?dedup=0&style={i % 2}&ci=bootstrap&source=source-{i % 5}"
        f"&source=source-{(i + 1 + i // 5) % 5}"
        for i in range(20)
    ]
    health: list[float] = []
    playing = threading.Event()

    def poll_health() -> None:
        while not playing.is_set():
            started = time.perf_counter()
            status, _, _ = _get(server, "/healthz")
            assert status == 200
            health.append(time.perf_counter() - started)
            time.sleep(0.05)

    def board(query: str) -> tuple[int, int]:
        """The board, retried as its Retry-After says; (final status, retries)."""
        for retries in range(30):
            status, headers, _ = _get(server, query)
            if status != 503:
                return status, retries
            time.sleep(float(headers.get("retry-after", "1")))
        return 503, 30

    poller = threading.Thread(target=poll_health)
    poller.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(board, queries))
    playing.set()
    poller.join()
    FIGURES["custom_boards"] = {
        "requests": len(queries),
        "statuses": sorted({s for s, _ in results}),
        "retries": sum(r for _, r in results),
        "seconds": round(time.perf_counter() - started, 2),
        "healthz_max_ms": round(max(health) * 1000, 1),
        "healthz_median_ms": round(statistics.median(health) * 1000, 1),
    }
    assert all(status == 200 for status, _ in results), FIGURES["custom_boards"]
    assert max(health) < 1.0, FIGURES["custom_boards"]


def test_a_multibyte_prompt_over_the_context_is_refused_before_anything_is_queued(
    server: str, standin: VLLMStandIn, visitors: list[Script]
) -> None:
    mallory = _visitor(server, visitors)
    mallory.start()
    started = time.perf_counter()
    mallory.send({"type": "message.send", "text": "\U0001d54f" * 4_000})  # double-struck X
    refusal = mallory.until("error")
    FIGURES["multibyte_refused_ms"] = round((time.perf_counter() - started) * 1000, 1)

    assert refusal["code"] == "prompt_too_long", refusal
    assert Turn.objects.count() == Answer.objects.count() == 0
    assert standin.behaviour.requests == []


@pytest.mark.parametrize("escaped", ["\\u0000", "\\ud800", "a\\udfffb"])
def test_nul_and_lone_surrogates_in_a_prompt_are_refused_and_nothing_is_saved(
    server: str, standin: VLLMStandIn, visitors: list[Script], escaped: str
) -> None:
    mallory = _visitor(server, visitors)
    mallory.start()
    mallory.send('{"type": "message.send", "text": "hi ' + escaped + '"}')

    assert mallory.until("error")["code"] == "bad_field"
    assert Turn.objects.count() == 0


def test_nul_and_surrogates_in_model_output_arrive_replaced_and_the_battle_is_votable(
    server: str, standin: VLLMStandIn, visitors: list[Script]
) -> None:
    standin.behaviour.words = ["bad\u0000byte", "lone\ud800half", "fine"]
    alice = _visitor(server, visitors)
    alice.start()
    alice.send({"type": "message.send", "text": "Say something odd."})
    alice.answers_finished()
    alice.send({"type": "vote", "choice": "a"})
    alice.until("vote.recorded")

    texts = list(Answer.objects.values_list("status", "text"))
    assert [s for s, _ in texts] == ["done", "done"], texts
    assert all("\x00" not in t and "\ufffd" in t for _, t in texts), texts


def test_model_output_with_a_remote_image_is_rendered_without_it(
    server: str, standin: VLLMStandIn, visitors: list[Script]
) -> None:
    standin.behaviour.words = ["Look:", "![x](http://198.51.100.7/p.png?q=secret)"]
    alice = _visitor(server, visitors)
    alice.start()
    alice.send({"type": "message.send", "text": "Show me."})
    done = [alice.until("gen.done"), alice.until("gen.done")]
    status, headers, _ = _get(server, "/", alice.cookie)

    assert all("198.51.100.7" not in d["html"] for d in done), done
    assert status == 200
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data:" in policy


def test_deep_nested_oversized_and_binary_frames_get_errors_or_a_closed_socket(
    server: str, standin: VLLMStandIn, visitors: list[Script]
) -> None:
    mallory = _visitor(server, visitors)
    mallory.send("[" * 60_000)
    assert mallory.until("error")["code"] == "bad_json"
    mallory.send(b"\x00\x01binary")
    assert mallory.until("error")["code"] == "bad_json"
    assert mallory.start()["type"] == "battle.state"  # the socket still works

    mallory.send("x" * 1_000_000)
    with pytest.raises(ConnectionClosed):
        mallory.until("never", timeout=10)


def test_a_thousand_cookieless_page_views_write_no_row(server: str) -> None:
    sessions, visitors = Session.objects.count(), Visitor.objects.count()
    parts = urlsplit(server)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    started = time.perf_counter()
    cookies = set()
    try:
        for _ in range(1_000):
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            cookies.add(response.getheader("set-cookie", "").split(";", 1)[0])
    finally:
        conn.close()
    FIGURES["page_views"] = {
        "views": 1_000,
        "seconds": round(time.perf_counter() - started, 2),
        "distinct_visitor_cookies": len(cookies),
    }
    assert Session.objects.count() == sessions
    assert Visitor.objects.count() == visitors
    assert len(cookies) == 1_000
