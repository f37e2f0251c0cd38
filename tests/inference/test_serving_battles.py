"""Battles through the real websocket consumer with contenders on servers:
the local engine against llama.cpp's server, a base against its LoRA adapter,
a side whose server fails mid-battle, a stop that aborts the server's work.
With Redis configured the HTTP-engine answers go to their own queue and
worker, the local ones to theirs."""

from __future__ import annotations

from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from arena.models import Answer, Battle
from inference.dispatch import queue_for
from inference.models import Contender, Endpoint, Engine, Health
from tests.arena.wsclient import Client, of_type
from tests.conftest import TINY, Process, free_port
from tests.inference.servers import VLLMStandIn, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]


@pytest.fixture
def serving(generation: None, http_worker: Process | None) -> Process | None:
    """Whatever runs answers here: both Celery workers, or the web process's pools."""
    return http_worker


async def _battle(alice: str, a: str, b: str, text: str = "Say hello.") -> list[dict[str, object]]:
    client = Client(alice)
    await client.connect()
    await client.start(mode="named", contender_a=a, contender_b=b)
    await client.send({"type": "message.send", "text": text})
    events = await client.answers_finished()
    await client.close()
    return events


def test_answers_go_to_the_queue_of_their_engine_kind() -> None:
    assert queue_for(Engine.OPENAI) == settings.ARENA_QUEUE_HTTP == "generation-http"
    assert queue_for(Engine.LOCAL) == settings.ARENA_QUEUE_LOCAL == "generation"


async def test_the_local_engine_battles_llama_cpp(
    alpha: Contender, gamma: Contender, alice: str, serving: Process | None
) -> None:
    events = await _battle(alice, "alpha", "gamma")
    done = {e["side"]: e for e in of_type(events, "gen.done")}
    assert set(done) == {"a", "b"}, events
    for side in ("a", "b"):
        deltas = [e for e in of_type(events, "gen.delta") if e["side"] == side]
        assert "".join(str(d["text"]) for d in deltas) == done[side]["text"]
    assert done["b"]["stats"]["tokens"] == TINY["max_tokens"]
    assert done["b"]["stats"]["finish_reason"] == "length"
    if serving is not None:  # the llama.cpp side ran on the HTTP-engine worker
        assert "inference.tasks.generate_answer" in serving.tail(20_000)


async def test_a_base_and_its_lora_adapter_battle_on_the_local_engine(
    alpha: Contender, loras: dict[str, Path], alice: str, serving: Process | None
) -> None:
    await sync_to_async(Contender.objects.create)(
        name="alpha-pirate",
        kind=Contender.Kind.LORA,
        adapter_path=str(loras["pirate"]),
        system_prompt=alpha.system_prompt,
        params=TINY,
    )
    events = await _battle(alice, "alpha", "alpha-pirate")
    done = {e["side"]: e["text"] for e in of_type(events, "gen.done")}
    assert set(done) == {"a", "b"}, events
    assert done["a"] != done["b"]  # same prompt, same system prompt: only the adapter differs


async def test_a_server_error_mid_stream_fails_that_side_only(
    alpha: Contender, vllm: VLLMStandIn, alice: str, serving: Process | None
) -> None:
    vllm.behaviour.error_after = 2
    endpoint = await sync_to_async(Endpoint.objects.create)(name="vllm", base_url=vllm.url)
    await sync_to_async(Contender.objects.create)(
        name="flaky", engine=Engine.OPENAI, endpoint=endpoint, model=vllm.behaviour.base
    )
    events = await _battle(alice, "alpha", "flaky")
    assert [e["side"] for e in of_type(events, "gen.done")] == ["a"]
    (error,) = of_type(events, "gen.error")
    assert error["side"] == "b" and error["code"] == "engine_failed"
    assert "CUDA error" not in str(error["message"])  # the detail is the admin's
    failed = await sync_to_async(Answer.objects.get)(side="b")
    assert failed.text == "The quick "  # what arrived is kept
    assert "CUDA error" in failed.error_message


async def test_an_unreachable_server_fails_that_side_and_leaves_sampling(
    alpha: Contender, beta: Contender, alice: str, serving: Process | None
) -> None:
    endpoint = await sync_to_async(Endpoint.objects.create)(
        name="gone", base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout=1
    )
    await sync_to_async(Contender.objects.create)(
        name="ghost", engine=Engine.OPENAI, endpoint=endpoint, model="m"
    )
    events = await _battle(alice, "alpha", "ghost")
    (error,) = of_type(events, "gen.error")
    assert error["side"] == "b" and error["code"] == "engine_unreachable"
    ghost = await sync_to_async(Contender.objects.get)(name="ghost")
    assert ghost.health == Health.DOWN
    client = Client(alice)
    await client.connect()
    for _ in range(10):  # anonymous draws: only alpha and beta are left
        state = await client.start()
        assert state["type"] == "battle.state"
    await client.close()

    def drawn() -> set[str]:
        anonymous = Battle.objects.filter(mode=Battle.Mode.ANONYMOUS).select_related(
            "contender_a", "contender_b"
        )
        return {n for b in anonymous for n in (b.contender_a.name, b.contender_b.name)}

    assert await sync_to_async(drawn)() == {"alpha", "beta"}


async def test_stop_makes_the_server_abort_the_request(
    alpha: Contender, vllm: VLLMStandIn, alice: str, serving: Process | None
) -> None:
    vllm.behaviour.words = [f"w{i}" for i in range(400)]
    vllm.behaviour.token_delay = 0.05
    endpoint = await sync_to_async(Endpoint.objects.create)(name="vllm", base_url=vllm.url)
    await sync_to_async(Contender.objects.create)(
        name="chatty",
        engine=Engine.OPENAI,
        endpoint=endpoint,
        model=vllm.behaviour.base,
        params={"max_tokens": 400},
    )
    client = Client(alice)
    await client.connect()
    await client.start(mode="named", contender_a="alpha", contender_b="chatty")
    await client.send({"type": "message.send", "text": "Talk."})
    await client.until(lambda e: e["type"] == "gen.delta" and e["side"] == "b")
    await client.send({"type": "stop"})
    await client.answers_finished()
    assert await sync_to_async(wait_until)(lambda: vllm.behaviour.aborted, 10)
    assert not vllm.behaviour.finished
    stopped = await sync_to_async(Answer.objects.get)(side="b")
    assert stopped.status == Answer.Status.STOPPED and stopped.text.startswith("w0 ")
    await client.close()
