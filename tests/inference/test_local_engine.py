"""The local engine with the real SmolLM2 model."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.conf import settings

from inference.engines import engine_get
from inference.engines.base import Engine, GenerationRequest, StreamEnd, TextDelta
from inference.engines.local import LocalEngine, converted_model_dir

pytestmark = pytest.mark.model


def _request(text: str, **kw: object) -> GenerationRequest:
    return GenerationRequest(model="", messages=[{"role": "user", "content": text}], **kw)  # type: ignore[arg-type]


async def _collect(engine: Engine, request: GenerationRequest) -> tuple[str, StreamEnd]:
    text = ""
    end = None
    async for event in engine.stream(request):
        if isinstance(event, TextDelta):
            text += event.text
        else:
            end = event
    assert end is not None
    return text, end


def test_the_default_model_is_converted_once_and_loads_fast() -> None:
    path = converted_model_dir(settings.ARENA_MODEL_CACHE)
    assert (path / "config.json").exists()
    assert list(path.glob("*.safetensors"))
    started = time.perf_counter()
    LocalEngine(cache=settings.ARENA_MODEL_CACHE).load()
    assert time.perf_counter() - started < 10  # the GGUF route takes ~20 s


async def test_it_streams_text_and_reports_a_length_finish() -> None:
    engine = engine_get("local")
    text, end = await _collect(
        engine, _request("Count from one to twenty.", max_tokens=8, temperature=0)
    )
    assert text.strip()
    assert end.finish_reason == "length"
    assert end.completion_tokens == 8
    assert end.prompt_tokens and end.prompt_tokens > 5


async def test_greedy_decoding_is_repeatable() -> None:
    engine = engine_get("local")
    request = _request("What is the capital of France?", max_tokens=10, temperature=0)
    first, _ = await _collect(engine, request)
    second, _ = await _collect(engine, request)
    assert first == second


async def test_closing_the_stream_stops_generation_quickly() -> None:
    engine = engine_get("local")
    stream = engine.stream(_request("Write a very long essay about rivers.", max_tokens=400))
    async for event in stream:
        assert isinstance(event, TextDelta)
        break
    started = time.perf_counter()
    await stream.aclose()  # type: ignore[attr-defined]
    # The generating thread ends at its next token; nothing keeps running.
    await asyncio.sleep(0.5)
    import threading

    assert not [t for t in threading.enumerate() if t.name == "local-generate"]
    assert time.perf_counter() - started < 2


async def test_two_generations_share_one_model_concurrently() -> None:
    engine = engine_get("local")
    loaded = engine.load()  # type: ignore[attr-defined]
    results = await asyncio.gather(
        _collect(engine, _request("Say hi.", max_tokens=6, temperature=0)),
        _collect(engine, _request("Say bye.", max_tokens=6, temperature=0)),
    )
    assert all(text.strip() for text, _ in results)
    assert engine.load() is loaded  # type: ignore[attr-defined]


STORY = "Tell me a story about a cat."


async def test_seeded_answers_repeat_even_with_another_generation_running_alongside() -> None:
    engine = engine_get("local")
    seeded = _request(STORY, max_tokens=10, temperature=1.0, seed=7)
    first, _ = await _collect(engine, seeded)
    # An unseeded sampled answer draws from the process's RNG meanwhile; with
    # torch.manual_seed the two would share (and shift) one sequence.
    again, _ = await asyncio.gather(
        _collect(engine, seeded),
        _collect(engine, _request("Write a poem.", max_tokens=10, temperature=1.0)),
    )
    assert again[0] == first
    other, _ = await _collect(engine, _request(STORY, max_tokens=10, temperature=1.0, seed=8))
    assert other != first  # the seed is what made them equal, not greedy decoding


async def test_a_seeded_answer_leaves_the_process_random_state_untouched() -> None:
    import torch

    engine = engine_get("local")
    before = torch.get_rng_state()
    await asyncio.gather(
        _collect(engine, _request(STORY, max_tokens=6, temperature=1.0, seed=7)),
        _collect(engine, _request("Say hi.", max_tokens=6, temperature=0.8, seed=3)),
    )
    assert torch.equal(torch.get_rng_state(), before)
