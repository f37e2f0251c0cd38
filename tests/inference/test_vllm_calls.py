"""vLLM-only calls against the stand-in (vLLM itself needs a GPU): loading
and unloading LoRA adapters at run time, /v1/models with `parent`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.engines.base import EngineError
from inference.engines.openai import (
    EndpointConfig,
    health_probe,
    lora_load,
    lora_unload,
    models_list,
)
from tests.inference.servers import VLLMStandIn


def _adapter(tmp_path: Path, name: str, r: int = 8) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"r": r, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]})
    )
    return folder


def _config(vllm: VLLMStandIn) -> EndpointConfig:
    return EndpointConfig(name="vllm", base_url=vllm.url)


def test_an_adapter_loads_at_run_time_and_is_listed_with_its_parent(
    vllm: VLLMStandIn, tmp_path: Path
) -> None:
    config = _config(vllm)
    path = _adapter(tmp_path, "pirate")
    message = lora_load(config, name="pirate", path=str(path))
    assert "added successfully" in message
    listed = {m.id: m for m in models_list(config)}
    assert listed["pirate"].parent == vllm.behaviour.base
    assert listed["pirate"].root == str(path)
    assert listed[vllm.behaviour.base].parent is None


def test_an_adapter_unloads(vllm: VLLMStandIn, tmp_path: Path) -> None:
    config = _config(vllm)
    lora_load(config, name="pirate", path=str(_adapter(tmp_path, "pirate")))
    assert "removed successfully" in lora_unload(config, name="pirate")
    assert "pirate" not in {m.id for m in models_list(config)}
    with pytest.raises(EngineError) as caught:
        lora_unload(config, name="pirate")
    assert caught.value.code == "lora_rejected" and "cannot be found" in caught.value.message


def test_vllm_refusing_an_adapter_gives_its_reason(vllm: VLLMStandIn, tmp_path: Path) -> None:
    with pytest.raises(EngineError) as caught:
        lora_load(_config(vllm), name="big", path=str(_adapter(tmp_path, "big", r=64)))
    assert caught.value.code == "lora_rejected"
    assert "LoRA rank 64 is greater than max_lora_rank 16" in caught.value.message


def test_a_second_load_of_one_name_is_refused(vllm: VLLMStandIn, tmp_path: Path) -> None:
    config = _config(vllm)
    path = str(_adapter(tmp_path, "pirate"))
    lora_load(config, name="pirate", path=path)
    with pytest.raises(EngineError, match="already been loaded"):
        lora_load(config, name="pirate", path=path)


def test_without_runtime_updating_the_routes_are_missing(vllm: VLLMStandIn, tmp_path: Path) -> None:
    vllm.behaviour.runtime_lora = False
    with pytest.raises(EngineError) as caught:
        lora_load(_config(vllm), name="pirate", path=str(_adapter(tmp_path, "pirate")))
    assert caught.value.code == "lora_unsupported"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in caught.value.message


def test_health_is_read_at_the_server_root(vllm: VLLMStandIn) -> None:
    assert health_probe(_config(vllm)) is True
    vllm.behaviour.healthy = False
    with pytest.raises(EngineError) as caught:
        health_probe(_config(vllm))
    assert caught.value.code == "engine_busy"
