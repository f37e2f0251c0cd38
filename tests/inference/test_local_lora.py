"""LoRA adapters on the local engine, made in the test with peft on the real
SmolLM2 base: they answer differently from the base and from each other,
concurrently and exactly as peft itself would, and switching between them
never reloads the base."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from inference.engines.base import EngineError, GenerationRequest, StreamEnd, TextDelta
from inference.engines.local import LocalEngine, converted_model_dir
from tests.inference.loras import adapter_config_edit

pytestmark = pytest.mark.model

PROMPT = "Tell me about the sea."


def _request(adapter: Path | None = None, tokens: int = 12) -> GenerationRequest:
    return GenerationRequest(
        model="",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        adapter_path=str(adapter) if adapter else "",
    )


async def _answer(engine: LocalEngine, request: GenerationRequest) -> tuple[str, float]:
    """The text, and the time to its first token."""
    started = time.perf_counter()
    text, first = "", None
    async for event in engine.stream(request):
        if isinstance(event, TextDelta):
            first = first or time.perf_counter() - started
            text += event.text
        else:
            assert isinstance(event, StreamEnd)
    assert first is not None
    return text, first


@pytest.fixture(scope="module")
def engine() -> LocalEngine:
    """A local engine of its own, so its loads can be counted."""
    return LocalEngine(cache=settings.ARENA_MODEL_CACHE, max_rank=64)


async def test_the_base_and_two_adapters_answer_one_prompt_differently(
    engine: LocalEngine, loras: dict[str, Path]
) -> None:
    base, _ = await _answer(engine, _request())
    pirate, _ = await _answer(engine, _request(loras["pirate"]))
    poet, _ = await _answer(engine, _request(loras["poet"]))
    assert len({base, pirate, poet}) == 3, (base, pirate, poet)
    # And the base is still the base after adapters were put on it.
    assert (await _answer(engine, _request()))[0] == base


def test_an_adapter_answers_exactly_as_peft_itself_would(
    engine: LocalEngine, loras: dict[str, Path]
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = converted_model_dir(settings.ARENA_MODEL_CACHE)
    tokenizer = AutoTokenizer.from_pretrained(path)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(path), str(loras["poet"])
    ).eval()
    inputs: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = reference.generate(
            **inputs, max_new_tokens=12, do_sample=False, repetition_penalty=1.1
        )
    expected = tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    got, _ = asyncio.run(_answer(engine, _request(loras["poet"])))
    assert got == expected


async def test_concurrent_answers_of_base_and_adapters_do_not_mix(
    engine: LocalEngine, loras: dict[str, Path]
) -> None:
    solo = [
        (await _answer(engine, _request(adapter, tokens=16)))[0]
        for adapter in (None, loras["pirate"], loras["poet"])
    ]
    together = await asyncio.gather(
        *(_answer(engine, _request(a, tokens=16)) for a in (None, loras["pirate"], loras["poet"]))
    )
    assert [text for text, _ in together] == solo


async def test_switching_adapters_never_reloads_the_base(
    loras: dict[str, Path],
) -> None:
    engine = LocalEngine(cache=settings.ARENA_MODEL_CACHE)
    started = time.perf_counter()
    loaded = engine.load()
    base_load_s = time.perf_counter() - started
    weight = loaded.model.model.layers[0].mlp.down_proj.weight  # not targeted by either adapter
    pointer = weight.data_ptr()
    for first_use in (loras["pirate"], loras["poet"]):
        await _answer(engine, _request(first_use, tokens=2))  # loads the adapter
    # Now alternate: every answer switches adapter; none loads anything.
    switching, staying = [], []
    rotation: list[Path | None] = [loras["pirate"], loras["poet"], None]
    for adapter in rotation * 3:
        switching.append((await _answer(engine, _request(adapter, tokens=2)))[1])
    for _ in range(9):
        staying.append((await _answer(engine, _request(loras["poet"], tokens=2)))[1])
    assert engine.base_loads == 1
    assert engine.adapter_loads == 2
    assert loaded.model.model.layers[0].mlp.down_proj.weight.data_ptr() == pointer
    switch_cost = sorted(switching)[4] - sorted(staying)[4]  # medians of time to first token
    print(f"base load {base_load_s:.2f} s; adapter switch costs {switch_cost * 1000:+.1f} ms")
    assert switch_cost < 0.05


async def test_an_invalid_adapter_fails_the_answer_with_the_reason(
    engine: LocalEngine, loras: dict[str, Path], tmp_path: Path
) -> None:
    bad = Path(shutil.copytree(loras["pirate"], tmp_path / "dora"))
    adapter_config_edit(bad, use_dora=True)
    with pytest.raises(EngineError) as caught:
        await _answer(engine, _request(bad))
    assert caught.value.code == "adapter_invalid" and "DoRA" in caught.value.message
    with pytest.raises(EngineError) as caught:
        await _answer(engine, _request(tmp_path / "nowhere"))
    assert caught.value.code == "adapter_invalid"


async def test_an_adapter_whose_files_change_is_loaded_again(
    engine: LocalEngine, loras: dict[str, Path], tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(loras["pirate"], tmp_path / "retrained"))
    first, _ = await _answer(engine, _request(folder))
    shutil.copy(loras["poet"] / "adapter_model.safetensors", folder)
    shutil.copy(loras["poet"] / "adapter_config.json", folder)
    second, _ = await _answer(engine, _request(folder))
    assert first != second
    assert second == (await _answer(engine, _request(loras["poet"])))[0]
