"""Which votes count: only on answers with text, and within the visitor's
and the network's daily caps. The websocket through the real ASGI app; the
slow contender is the vLLM stand-in (tests/inference/servers.py) on a real
socket; caps counted in Redis on the services pass."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from arena import services
from arena.events import ArenaError
from arena.models import Answer, Battle, Vote
from inference.models import Contender, Endpoint, Engine
from ratings.annotation import votes_annotate_pending
from tests.arena.wsclient import Client
from tests.conftest import Process
from tests.inference.servers import VLLMStandIn, http_worker_start

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def vllm() -> Iterator[VLLMStandIn]:
    server = VLLMStandIn()
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
def slow(db: None, vllm: VLLMStandIn, generation: None, http_worker: Process | None) -> VLLMStandIn:
    """A contender `slow` on the stand-in, whose tokens come as `vllm.behaviour` says."""
    endpoint = Endpoint.objects.create(name="vllm", base_url=vllm.url)
    Contender.objects.create(
        name="slow",
        engine=Engine.OPENAI,
        endpoint=endpoint,
        model=vllm.behaviour.base,
        params={"max_tokens": 400},
    )
    return vllm


def _both_finished() -> bool:
    return all(a.is_finished for a in Answer.objects.all()) and Answer.objects.count() == 2


async def _eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll without holding the thread the consumer's database calls run on."""
    deadline = time.monotonic() + timeout
    while not await sync_to_async(predicate)():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _named_battle(alice: str) -> Client:
    client = Client(alice)
    assert await client.connect()
    state = await client.start(mode="named", contender_a="alpha", contender_b="slow")
    assert state["type"] == "battle.state", state
    return client


@pytest.mark.model
async def test_a_vote_on_an_answer_stopped_before_its_first_token_is_refused(
    alpha: Contender, slow: VLLMStandIn, alice: str
) -> None:
    slow.behaviour.first_token_delay = 10.0
    client = await _named_battle(alice)
    await client.send({"type": "message.send", "text": "Say hello."})
    await client.send({"type": "stop"})
    # Answers stopped before a worker claimed them end without a gen.done.
    assert await _eventually(_both_finished, 60)
    assert (await client.error({"type": "vote", "choice": "a"}))["code"] == "empty_answer"
    assert await sync_to_async(Vote.objects.count)() == 0
    battle = await sync_to_async(Battle.objects.get)()
    assert battle.status == Battle.Status.OPEN
    b = await sync_to_async(Answer.objects.get)(side="b")
    assert (b.status, b.text) == (Answer.Status.STOPPED, "")
    await client.close()


async def test_a_vote_on_pending_answers_stopped_at_once_is_refused(
    contenders: object, alice: str
) -> None:
    client = Client(alice)
    assert await client.connect()
    state = await client.start()
    # A turn whose answers no worker has claimed yet: `stop` ends them unstarted.
    await sync_to_async(services.turn_send)(
        battle_id=state["battle"]["id"], session_key=alice, text="Hello?"
    )
    await client.send({"type": "stop"})
    await client.until(lambda e: e["type"] == "battle.state")
    assert (await client.error({"type": "vote", "choice": "tie"}))["code"] == "empty_answer"
    assert await sync_to_async(Vote.objects.count)() == 0
    await client.close()


@pytest.mark.model
async def test_a_stopped_answer_with_text_stays_votable(
    alpha: Contender, slow: VLLMStandIn, alice: str
) -> None:
    slow.behaviour.words = [f"w{i}" for i in range(400)]
    slow.behaviour.token_delay = 0.1  # 40 s in all: alpha finishes long before
    client = await _named_battle(alice)
    await client.send({"type": "message.send", "text": "Talk."})
    seen: set[tuple[str, str]] = set()

    def a_done_and_b_streaming(event: dict[str, object]) -> bool:
        seen.add((str(event["type"]), str(event.get("side"))))
        return {("gen.done", "a"), ("gen.delta", "b")} <= seen

    await client.until(a_done_and_b_streaming)
    await client.send({"type": "stop"})
    await client.until(lambda e: e["type"] == "gen.done" and e["side"] == "b")
    await client.send({"type": "vote", "choice": "b"})
    await client.until(lambda e: e["type"] == "vote.recorded")
    b = await sync_to_async(Answer.objects.get)(side="b")
    assert b.status == Answer.Status.STOPPED and b.text.startswith("w0")
    assert await sync_to_async(Vote.objects.count)() == 1
    await client.close()


def test_a_vote_on_an_answer_of_only_whitespace_is_refused(contenders: object, alice: str) -> None:
    battle = services.battle_create(session_key=alice)
    a, b = services.turn_create(battle_id=battle.pk, session_key=alice, text="Hi")
    Answer.objects.filter(pk=a.pk).update(status=Answer.Status.DONE, text="Hello.")
    Answer.objects.filter(pk=b.pk).update(status=Answer.Status.DONE, text=" \n\t")
    with pytest.raises(ArenaError) as caught:
        services.vote_record(battle_id=battle.pk, session_key=alice, choice="a")
    assert caught.value.code == "empty_answer"
    assert not Vote.objects.exists()


# --- daily caps per network ----------------------------------------------------


def _vote(ip: str) -> Vote:
    """A visitor of their own, on `ip`, votes on a finished battle."""
    visitor = secrets.token_hex(16)
    battle = services.battle_create(session_key=visitor, ip=ip)
    answers = services.turn_create(battle_id=battle.pk, session_key=visitor, text="Hi")
    Answer.objects.filter(pk__in=[a.pk for a in answers]).update(
        status=Answer.Status.DONE, text="Hello."
    )
    services.vote_record(battle_id=battle.pk, session_key=visitor, choice="a", ip=ip)
    return Vote.objects.get(battle=battle)


def _fresh_ipv4() -> str:
    # Fresh per run: on the services pass Redis keeps the day's counts.
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def test_votes_past_the_network_cap_are_kept_and_flagged(
    contenders: object, settings: object
) -> None:
    settings.ARENA_IP_DAILY_VOTE_CAP = 2  # type: ignore[attr-defined]
    shared, other = _fresh_ipv4(), _fresh_ipv4()
    flags = [_vote(shared).over_cap for _ in range(4)]
    assert flags == [False, False, True, True]
    assert _vote(other).over_cap is False
    assert Vote.objects.count() == 5
    # A vote without a known address is held to the visitor's cap alone.
    assert _vote("").over_cap is False


def test_ipv6_addresses_share_a_cap_within_a_slash_64_only(
    contenders: object, settings: object
) -> None:
    settings.ARENA_IP_DAILY_VOTE_CAP = 1  # type: ignore[attr-defined]
    g3, g4 = secrets.randbelow(0xFFFF), secrets.randbelow(0xFFFF)
    prefix, neighbour = f"2001:db8:{g3:x}:{g4:x}", f"2001:db8:{g3:x}:{g4 + 1:x}"
    assert _vote(f"{prefix}::1").over_cap is False
    assert _vote(f"{prefix}:abcd::99").over_cap is True
    assert _vote(f"{neighbour}::1").over_cap is False


def test_the_visitor_cap_still_holds_on_a_shared_address(
    contenders: object, alice: str, settings: object
) -> None:
    settings.ARENA_DAILY_VOTE_CAP = 1  # type: ignore[attr-defined]
    ip = _fresh_ipv4()
    for _ in range(2):
        battle = services.battle_create(session_key=alice, ip=ip)
        answers = services.turn_create(battle_id=battle.pk, session_key=alice, text="Hi")
        Answer.objects.filter(pk__in=[a.pk for a in answers]).update(
            status=Answer.Status.DONE, text="Hello."
        )
        services.vote_record(battle_id=battle.pk, session_key=alice, choice="a", ip=ip)
    # The visitor's cap is ratings' annotation, made after the commit: now.
    votes_annotate_pending()
    assert list(Vote.objects.order_by("created_at").values_list("over_cap", flat=True)) == [
        False,
        True,
    ]
