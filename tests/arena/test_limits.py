"""Nothing a visitor does is unbounded: every frame takes a token from its
socket's bucket, sockets are capped per visitor and per battle, a reader that
falls behind gets a state instead of an unbounded outbox, answers in flight
are capped per visitor and per network, a battle nobody watches has its
answers stopped, and moderation runs after the cheap checks on a bounded pool.

Through the real ASGI app; on the services pass with Redis (the hub, the
watchers' presence, the counters) and a real Celery worker for the answers of
the vLLM stand-in (tests/inference/servers.py)."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from arena import moderation, services
from arena.env import env_limits
from arena.events import ArenaError
from arena.models import Answer, Battle, Turn
from inference.models import Contender, Endpoint, Engine
from realtime import battle_group
from tests.arena.wsclient import Client, Event
from tests.conftest import Process
from tests.inference.servers import VLLMStandIn, http_worker_start

pytestmark = pytest.mark.django_db(transaction=True)


def address() -> str:
    """A fresh client address: the per-IP counters in Redis outlive a run."""
    return f"2001:db8:{secrets.token_hex(2)}:{secrets.token_hex(2)}::1"


async def until_closed(client: Client, timeout: float = 30) -> tuple[list[Event], int | None]:
    """Every event the server sends until it closes the socket, and the close code."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while True:
        out = await client.comm.receive_output(timeout=max(0.01, deadline - time.monotonic()))
        if out["type"] == "websocket.close":
            return events, out.get("code")
        data = json.loads(out["text"])
        events.extend(data if isinstance(data, list) else [data])


# --- the per-socket bucket --------------------------------------------------


async def test_a_flood_of_resumes_is_refused_and_closed_while_another_visitor_starts_in_time(
    contenders: object, alice: str, mallory: str, settings: Any
) -> None:
    settings.ARENA_RATE_LIMITS = env_limits("UNSET_IN_TESTS", "resume=60/60,battle=30/60")
    flooder = Client(alice, address=address())
    other = Client(mallory, address=address())
    assert await flooder.connect() and await other.connect()
    battle = (await flooder.start())["battle"]["id"]
    frame = json.dumps({"type": "battle.resume", "battle": battle})
    for _ in range(3000):
        await flooder.comm.send_to(text_data=frame)

    began = time.monotonic()
    await other.send({"type": "battle.start"})
    state = await other.next(timeout=10)
    took = time.monotonic() - began
    assert state["type"] == "battle.state"
    assert took < 0.5, f"battle.start took {took * 1000:.0f} ms during the flood"

    events, code = await until_closed(flooder)
    assert code == 4429
    refused = [e for e in events if e["type"] == "error"]
    assert refused and {e["code"] for e in refused} == {"rate_limited"}
    assert all(e["retry_after"] >= 1 for e in refused)
    # The flood's replies are no flood: the burst's states and a few errors.
    assert len([e for e in events if e["type"] == "battle.state"]) <= 40
    assert len(refused) <= 10
    await flooder.close()
    await other.close()


async def test_every_kind_of_bad_frame_takes_a_token_and_gets_its_code(
    contenders: object, alice: str, settings: Any
) -> None:
    settings.ARENA_SOCKET_EVENTS_BURST = 6
    settings.ARENA_SOCKET_EVENTS_PER_SECOND = 2.0
    client = Client(alice)
    assert await client.connect()
    frames: list[tuple[str | bytes, str]] = [
        (json.dumps({"type": "battle.explode"}), "unknown_type"),
        ("{not json", "bad_json"),
        (b"\x00\x01binary", "bad_json"),
        ("[" * 60_000, "bad_json"),  # deep enough to exhaust the parser's recursion
        ("[" * 100_000, "too_large"),
        (json.dumps({"type": "vote"}), "bad_field"),
    ]
    for frame, code in frames:
        if isinstance(frame, bytes):
            await client.comm.send_to(bytes_data=frame)
        else:
            await client.send(frame)
        reply = await client.next(timeout=10)
        assert (reply["type"], reply["code"]) == ("error", code), reply
    refused = await client.error({"type": "battle.start"})  # the seventh frame
    assert refused["code"] == "rate_limited" and refused["retry_after"] == 1
    await asyncio.sleep(0.6)  # a token back: the socket was never dropped
    assert (await client.start())["type"] == "battle.state"
    await client.close()


# --- sockets per visitor and per battle ------------------------------------


async def test_a_visitor_past_the_socket_cap_is_told_and_closed(
    contenders: object, alice: str, settings: Any
) -> None:
    settings.ARENA_SOCKETS_PER_VISITOR = 2
    first, second, third = Client(alice), Client(alice), Client(alice)
    assert await first.connect() and await second.connect()
    assert await third.connect()  # accepted, to be told why it is closed
    events, code = await until_closed(third, timeout=10)
    assert code == 4409
    assert [e["code"] for e in events] == ["too_many_sockets"]
    await third.close()
    await first.close()
    fourth = Client(alice)  # a socket freed is a socket to be had
    assert await fourth.connect()
    assert (await fourth.start())["type"] == "battle.state"
    await second.close()
    await fourth.close()


async def test_a_battle_past_the_socket_cap_is_refused_and_the_socket_stays_usable(
    contenders: object, alice: str, settings: Any
) -> None:
    settings.ARENA_SOCKETS_PER_BATTLE = 2
    first, second, third = Client(alice), Client(alice), Client(alice)
    for client in (first, second, third):
        assert await client.connect()
    battle = (await first.start())["battle"]["id"]
    resume = {"type": "battle.resume", "battle": battle}
    await second.send(resume)
    assert (await second.next())["type"] == "battle.state"
    assert (await third.error(resume))["code"] == "too_many_sockets"
    assert (await third.start())["type"] == "battle.state"  # another battle is fine
    await second.close()
    await third.send(resume)  # a place is free again
    assert (await third.next())["battle"]["id"] == battle
    await first.close()
    await third.close()


# --- the outbox -------------------------------------------------------------


async def test_a_reader_far_behind_gets_the_battle_state_instead_of_every_event(
    contenders: object, alice: str, settings: Any
) -> None:
    settings.ARENA_SOCKET_OUTBOX_EVENTS = 5
    settings.ARENA_SOCKET_GATHER_MS = 300.0  # events wait for company: they pile up
    client = Client(alice, path="/ws/battle/?batch=1")
    assert await client.connect()
    battle = (await client.start())["battle"]["id"]
    layer = get_channel_layer()
    assert layer is not None
    for i in range(40):
        delta = {
            "type": "gen.delta", "side": "a", "turn": 0, "attempt": 0, "seq": i, "offset": i,
            "text": "x",
        }  # fmt: skip
        await layer.group_send(
            battle_group(battle), {"type": "battle.event", "text": json.dumps(delta)}
        )
    got: list[Event] = []
    while not await client.quiet(0.6):
        data = json.loads(await client.comm.receive_from(timeout=5))
        got.extend(data if isinstance(data, list) else [data])
    states = [e for e in got if e["type"] == "battle.state"]
    deltas = [e for e in got if e["type"] == "gen.delta"]
    assert states and states[0]["battle"]["id"] == battle
    assert len(deltas) < 40
    await client.close()


# --- answers in flight, answers nobody watches -------------------------------


@pytest.fixture
def vllm() -> Iterator[VLLMStandIn]:
    server = VLLMStandIn()
    server.behaviour.words = ["word"] * 400
    server.behaviour.token_delay = 0.05  # 20 s an answer, unless stopped
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http_worker(django_db_setup: None) -> Iterator[Process | None]:
    """A Celery worker on the HTTP-engine queue; none in the embedded default."""
    if settings.ARENA_TASKS != "celery":
        yield None
        return
    worker = http_worker_start()
    yield worker
    worker.stop()


@pytest.fixture
def slow(db: None, vllm: VLLMStandIn, generation: None, http_worker: Process | None) -> None:
    """Two contenders on the stand-in whose answers take 20 s."""
    endpoint = Endpoint.objects.create(name="vllm", base_url=vllm.url)
    for name in ("slow", "slower"):
        Contender.objects.create(
            name=name,
            engine=Engine.OPENAI,
            endpoint=endpoint,
            model=vllm.behaviour.base,
            params={"max_tokens": 400},
        )


async def slow_turn(visitor: str, at: str = "127.0.0.1") -> tuple[Client, str]:
    """A socket whose battle has both answers generating."""
    client = Client(visitor, address=at)
    assert await client.connect()
    state = await client.start(mode="named", contender_a="slow", contender_b="slower")
    await client.send({"type": "message.send", "text": "Count to a thousand."})
    await client.until(lambda e: e["type"] == "battle.state")
    return client, state["battle"]["id"]


def _statuses(battle: str) -> set[str]:
    return set(Answer.objects.filter(turn__battle_id=battle).values_list("status", flat=True))


async def statuses(battle: str) -> set[str]:
    return await sync_to_async(_statuses)(battle)


async def finished(battle: str, timeout: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await statuses(battle)
        if not found & {Answer.Status.PENDING, Answer.Status.STREAMING}:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"answers of {battle} still running: {await statuses(battle)}")


async def stop(client: Client, battle: str) -> None:
    await client.send({"type": "stop"})
    await finished(battle)


async def test_a_visitor_with_answers_in_flight_elsewhere_is_told_busy(
    slow: None, alice: str, settings: Any
) -> None:
    settings.ARENA_ANSWERS_IN_FLIGHT = 2
    first, battle = await slow_turn(alice)
    second = Client(alice)
    assert await second.connect()
    other = (await second.start(mode="named", contender_a="slow", contender_b="slower"))["battle"]
    busy = await second.error({"type": "message.send", "text": "Hello?"})
    assert busy["code"] == "busy" and busy["retry_after"] >= 1
    assert await sync_to_async(Turn.objects.filter(battle_id=other["id"]).count)() == 0
    await stop(first, battle)
    await second.send({"type": "message.send", "text": "Hello?"})  # room again
    await second.until(lambda e: e["type"] == "battle.state")
    await stop(second, other["id"])
    await first.close()
    await second.close()


async def test_a_network_with_answers_in_flight_is_told_busy(
    slow: None, alice: str, mallory: str, settings: Any
) -> None:
    settings.ARENA_ANSWERS_IN_FLIGHT = 0
    settings.ARENA_ANSWERS_IN_FLIGHT_PER_IP = 2
    shared = address()
    first, battle = await slow_turn(alice, at=shared)
    neighbour = Client(mallory, address=shared)
    assert await neighbour.connect()
    await neighbour.start(mode="named", contender_a="slow", contender_b="slower")
    busy = await neighbour.error({"type": "message.send", "text": "Hello?"})
    assert busy["code"] == "busy" and busy["retry_after"] >= 1
    await stop(first, battle)
    await first.close()
    await neighbour.close()


async def test_the_answers_of_a_battle_nobody_watches_stop_after_the_grace_period(
    slow: None, alice: str, settings: Any
) -> None:
    settings.ARENA_ORPHAN_GRACE_SECONDS = 0.3
    client, battle = await slow_turn(alice)
    await client.close()
    assert await finished(battle, timeout=15) == {Answer.Status.STOPPED}


async def test_answers_go_on_when_the_visitor_comes_back_within_the_grace_period(
    slow: None, alice: str, settings: Any
) -> None:
    settings.ARENA_ORPHAN_GRACE_SECONDS = 1.0
    client, battle = await slow_turn(alice)
    await client.close()
    back = Client(alice)
    assert await back.connect()
    await back.send({"type": "battle.resume", "battle": battle})
    await back.until(lambda e: e["type"] == "battle.state")
    await asyncio.sleep(2.0)  # the grace period is long over
    assert Answer.Status.STOPPED not in await statuses(battle)
    await stop(back, battle)
    await back.close()


@pytest.mark.skipif(not settings.REDIS_URL, reason="other web processes share Redis")
async def test_a_watcher_in_another_web_process_keeps_the_answers_going(
    slow: None, alice: str, settings: Any
) -> None:
    settings.ARENA_ORPHAN_GRACE_SECONDS = 0.3
    client, battle = await slow_turn(alice)
    probe = redis.Redis.from_url(settings.REDIS_URL)
    key = f"arena:watched:{battle}"
    try:
        probe.zadd(key, {"another-process": time.time() + 30})  # as its renewal writes it
        await client.close()
        await asyncio.sleep(1.5)
        assert Answer.Status.STOPPED not in await statuses(battle)
        probe.zrem(key, "another-process")
        back = Client(alice)
        assert await back.connect()
        await back.send({"type": "battle.resume", "battle": battle})
        await back.until(lambda e: e["type"] == "battle.state")
        await stop(back, battle)
        await back.close()
    finally:
        probe.delete(key)
        probe.close()


# --- moderation after the cheap checks, on a bounded pool ---------------------


class ModerationServer:
    """An OpenAI-compatible moderation endpoint on loopback that counts its
    calls and, while `gate` is clear, holds them."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls.append(body["input"])
                outer.gate.wait(timeout=30)
                data = json.dumps({"results": [{"flagged": False, "categories": {}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/moderations"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def moderator(settings: Any) -> Iterator[ModerationServer]:
    server = ModerationServer()
    settings.ARENA_MODERATION_URL = server.url
    moderation._bounded.cache_clear()
    yield server
    server.stop()
    moderation._bounded.cache_clear()


async def test_a_prompt_that_fails_the_cheap_checks_never_reaches_moderation(
    contenders: object, alice: str, mallory: str, moderator: ModerationServer, generation: None
) -> None:
    client = Client(alice)
    assert await client.connect()
    await client.start()
    for text, code in (("   ", "empty_prompt"), ("x" * 4001, "prompt_too_long")):
        assert (await client.error({"type": "message.send", "text": text}))["code"] == code
    intruder = Client(mallory)
    assert await intruder.connect()
    refused = await intruder.error({"type": "message.send", "text": "hello"})
    assert refused["code"] == "no_battle"
    assert moderator.calls == []
    await client.send({"type": "message.send", "text": "A fair question"})
    await client.until(lambda e: e["type"] == "battle.state")
    assert moderator.calls == ["A fair question"]
    await client.answers_finished()
    await client.close()
    await intruder.close()


def test_the_precheck_refuses_a_battle_of_another_visitor(
    contenders: object, alice: str, mallory: str
) -> None:
    battle = services.battle_create(session_key=alice)
    with pytest.raises(ArenaError) as refused:
        services.turn_precheck(battle_id=battle.pk, session_key=mallory, text="hello")
    assert refused.value.code == "forbidden"
    Battle.objects.filter(pk=battle.pk).update(status=Battle.Status.VOTED)
    with pytest.raises(ArenaError) as voted:
        services.turn_precheck(battle_id=battle.pk, session_key=alice, text="hello")
    assert voted.value.code == "already_voted"


async def test_a_full_moderation_pool_answers_busy(
    contenders: object, alice: str, moderator: ModerationServer, settings: Any, generation: None
) -> None:
    settings.ARENA_MODERATION_THREADS = 1
    settings.ARENA_MODERATION_QUEUE = 0
    moderation._bounded.cache_clear()
    moderator.gate.clear()
    held, other = Client(alice), Client(alice)
    assert await held.connect() and await other.connect()
    await held.start()
    await other.start()
    await held.send({"type": "message.send", "text": "First"})
    for _ in range(100):  # the call is at the endpoint, holding the one thread
        if moderator.calls:
            break
        await asyncio.sleep(0.05)
    busy = await other.error({"type": "message.send", "text": "Second"})
    assert busy["code"] == "busy" and busy["retry_after"] >= 1
    moderator.gate.set()
    await held.until(lambda e: e["type"] == "battle.state")
    assert moderator.calls == ["First"]
    await held.answers_finished()
    await held.close()
    await other.close()
