"""What a visitor sees of an answer served over HTTP: a failure is one fixed
message per code (the endpoint, host, environment variable and served models
stay in the log and the admin), and model text never carries a NUL or a lone
surrogate. Battles through the real consumer against real HTTP servers on
loopback; with Redis configured the answers run on the HTTP-engine worker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from arena.events import ANSWER_ERRORS
from arena.models import Answer
from inference.models import Contender, Endpoint, Engine
from tests.arena.wsclient import Client
from tests.conftest import Process, free_port
from tests.inference.servers import VLLMStandIn

pytestmark = [pytest.mark.django_db(transaction=True)]

Frame = tuple[str, dict[str, Any]]


@pytest.fixture
def steady(db: None) -> Iterator[Contender]:
    """A contender on a server of its own that answers well: the other side."""
    server = VLLMStandIn()
    endpoint = Endpoint.objects.create(name="steady-pool", base_url=server.url)
    yield Contender.objects.create(
        name="steady", engine=Engine.OPENAI, endpoint=endpoint, model=server.behaviour.base
    )
    server.stop()


async def _battle(alice: str, a: str, b: str) -> tuple[list[Frame], dict[str, Any]]:
    """Every raw frame of a named battle's first turn and of a resync after
    it; and the resynced state."""
    client = Client(alice)
    await client.connect()
    await client.send({"type": "battle.start", "mode": "named", "contender_a": a, "contender_b": b})
    frames = [await _frame(client)]
    await client.send({"type": "message.send", "text": "Say hello."})
    ended = 0
    while ended < 2:
        frames.append(await _frame(client))
        ended += frames[-1][1]["type"] in ("gen.done", "gen.error")
    await client.send({"type": "battle.resume", "battle": frames[0][1]["battle"]["id"]})
    while frames[-1][1]["type"] != "battle.state" or len(frames) < 3:
        frames.append(await _frame(client))
    await client.close()
    return frames, frames[-1][1]


async def _frame(client: Client) -> Frame:
    raw = await client.comm.receive_from(timeout=60)
    return raw, json.loads(raw)


def _assert_hidden(frames: list[Frame], secrets: list[str]) -> None:
    for raw, event in frames:
        shown = [s for s in secrets if s in raw]
        assert shown == [], f"{event['type']} shows {shown}: {raw[:300]}"


def _error(frames: list[Frame]) -> dict[str, Any]:
    (error,) = [event for _, event in frames if event["type"] == "gen.error"]
    return error


async def test_a_server_error_naming_an_internal_host_shows_only_the_fixed_message(
    steady: Contender, vllm: VLLMStandIn, alice: str, http_worker: Process | None
) -> None:
    vllm.behaviour.chat_error = (
        500,
        "upstream gpu-7.corp.internal:8000 failed loading /srv/adapters/secret-lora "
        "(ARENA_KEY_PROD unset)",
    )
    endpoint = await sync_to_async(Endpoint.objects.create)(
        name="private-gpu-pool", base_url=vllm.url
    )
    await sync_to_async(Contender.objects.create)(
        name="broken", engine=Engine.OPENAI, endpoint=endpoint, model=vllm.behaviour.base
    )
    frames, state = await _battle(alice, "steady", "broken")
    error = _error(frames)
    assert (error["side"], error["code"]) == ("b", "engine_failed")
    assert error["message"] == ANSWER_ERRORS["engine_failed"]
    assert state["turns"][0]["b"]["error"] == {
        "code": "engine_failed",
        "message": ANSWER_ERRORS["engine_failed"],
    }
    secrets = ["gpu-7", "corp.internal", "/srv/adapters", "ARENA_KEY_PROD", "private-gpu-pool"]
    _assert_hidden(frames, [*secrets, f":{vllm.port}", "HTTP 500"])
    failed = await sync_to_async(Answer.objects.get)(side="b")
    assert "gpu-7.corp.internal:8000" in failed.error_message  # for the admin
    assert "HTTP 500" in failed.error_message


async def test_a_server_that_is_down_shows_only_the_fixed_message(
    steady: Contender, alice: str, http_worker: Process | None
) -> None:
    port = free_port()
    endpoint = await sync_to_async(Endpoint.objects.create)(
        name="gone-pool", base_url=f"http://127.0.0.1:{port}/v1", connect_timeout=1
    )
    await sync_to_async(Contender.objects.create)(
        name="ghost", engine=Engine.OPENAI, endpoint=endpoint, model="m"
    )
    frames, _ = await _battle(alice, "ghost", "steady")
    error = _error(frames)
    assert (error["side"], error["code"]) == ("a", "engine_unreachable")
    assert error["message"] == ANSWER_ERRORS["engine_unreachable"]
    _assert_hidden(frames, ["gone-pool", str(port)])
    failed = await sync_to_async(Answer.objects.get)(side="a")
    assert "gone-pool" in failed.error_message


async def test_a_model_the_server_does_not_serve_never_shows_what_it_serves(
    steady: Contender, vllm: VLLMStandIn, alice: str, http_worker: Process | None
) -> None:
    vllm.behaviour.adapters = {"customer-acme-lora": "/srv/adapters/acme"}
    endpoint = await sync_to_async(Endpoint.objects.create)(name="shared-pool", base_url=vllm.url)
    await sync_to_async(Contender.objects.create)(
        name="misnamed", engine=Engine.OPENAI, endpoint=endpoint, model="llama-typo"
    )
    frames, _ = await _battle(alice, "steady", "misnamed")
    error = _error(frames)
    assert (error["code"], error["message"]) == (
        "model_not_found",
        ANSWER_ERRORS["model_not_found"],
    )
    _assert_hidden(frames, ["customer-acme-lora", "Llama-3.2", "llama-typo", "shared-pool"])
    failed = await sync_to_async(Answer.objects.get)(side="b")
    assert "customer-acme-lora" in failed.error_message


async def test_a_missing_api_key_never_names_its_variable(
    steady: Contender, vllm: VLLMStandIn, alice: str, http_worker: Process | None
) -> None:
    endpoint = await sync_to_async(Endpoint.objects.create)(
        name="keyed-pool", base_url=vllm.url, api_key_env="ARENA_KEY_REVEAL_NEVER_SET"
    )
    await sync_to_async(Contender.objects.create)(
        name="keyless", engine=Engine.OPENAI, endpoint=endpoint, model=vllm.behaviour.base
    )
    frames, _ = await _battle(alice, "keyless", "steady")
    error = _error(frames)
    assert (error["code"], error["message"]) == ("engine_auth", ANSWER_ERRORS["engine_auth"])
    _assert_hidden(frames, ["ARENA_KEY_REVEAL_NEVER_SET", "keyed-pool"])
    failed = await sync_to_async(Answer.objects.get)(side="a")
    assert "ARENA_KEY_REVEAL_NEVER_SET" in failed.error_message


async def test_nul_and_lone_surrogates_in_model_output_arrive_replaced_and_the_answer_is_done(
    vllm: VLLMStandIn, alice: str, http_worker: Process | None
) -> None:
    # Escaped in the SSE JSON (`\\u0000`, `\\ud83d`), each chunk decoded on its
    # own: a pair split over two chunks is joined, the rest replaced.
    vllm.behaviour.words = ["pair \ud83d", "\ude00 ok ", "zero\x00 ", "lone\udfff", "."]
    vllm.behaviour.joiner = ""
    # Slow enough for a progress save (every 2 s) while the text streams.
    vllm.behaviour.token_delay = 0.6
    expected = "pair \U0001f600 ok zero\ufffd lone\ufffd."
    endpoint = await sync_to_async(Endpoint.objects.create)(name="odd-pool", base_url=vllm.url)
    for name in ("odd-a", "odd-b"):
        await sync_to_async(Contender.objects.create)(
            name=name, engine=Engine.OPENAI, endpoint=endpoint, model=vllm.behaviour.base
        )
    started = time.monotonic()
    frames, state = await _battle(alice, "odd-a", "odd-b")
    assert time.monotonic() - started > 2
    events = [event for _, event in frames]
    for side in ("a", "b"):
        deltas = [e for e in events if e["type"] == "gen.delta" and e["side"] == side]
        assert "".join(d["text"] for d in deltas) == expected
        (done,) = [e for e in events if e["type"] == "gen.done" and e["side"] == side]
        assert done["text"] == expected
        assert state["turns"][0][side]["text"] == expected
    for _, event in frames:  # every string of every frame is storable UTF-8
        text = json.dumps(event, ensure_ascii=False)
        assert "\x00" not in text
        text.encode("utf-8")
    saved = await sync_to_async(lambda: list(Answer.objects.values_list("status", "text")))()
    assert saved == [(Answer.Status.DONE, expected)] * 2
