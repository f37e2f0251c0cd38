"""The management commands scripts use to add models: the same checks as the admin."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from inference.models import Contender, Endpoint, Engine
from tests.inference.loras import adapter_config_edit
from tests.inference.servers import VLLMStandIn

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def test_a_script_adds_an_endpoint_discovers_its_models_and_checks_them(
    vllm: VLLMStandIn,
) -> None:
    vllm.behaviour.adapters["pirate"] = "/adapters/pirate"
    assert "added endpoint vllm" in _run("endpoint_add", "vllm", vllm.url, "--api-key-env", "")
    listing = _run("endpoint_models", "vllm", "--add")
    assert f"pirate (LoRA on {vllm.behaviour.base})" in listing
    assert Contender.objects.filter(endpoint__name="vllm").count() == 2
    report = _run("serving_check")
    assert "vllm (" in report and "ok" in report
    assert "DOWN" not in report


def test_a_script_adds_a_contender_on_an_endpoint_and_tries_it(vllm: VLLMStandIn) -> None:
    _run("endpoint_add", "vllm", vllm.url)
    out = _run(
        "contender_add",
        "big-llama",
        "--engine",
        "openai",
        "--endpoint",
        "vllm",
        "--model",
        vllm.behaviour.base,
        "--params",
        '{"temperature": 0.2, "max_tokens": 4}',
    )
    assert "added contender big-llama" in out
    contender = Contender.objects.get(name="big-llama")
    assert (contender.engine, contender.params) == (
        Engine.OPENAI,
        {"temperature": 0.2, "max_tokens": 4},
    )
    out = _run("contender_test", "big-llama")
    assert "The quick brown fox" in out and "first token" in out


def test_a_script_gets_the_same_refusals_as_the_admin(vllm: VLLMStandIn) -> None:
    _run("endpoint_add", "vllm", vllm.url)
    with pytest.raises(CommandError, match="does not serve 'nope'"):
        _run("contender_add", "x", "--engine", "openai", "--endpoint", "vllm", "--model", "nope")
    with pytest.raises(CommandError, match="endpoint: The OpenAI-compatible engine needs"):
        _run("contender_add", "x", "--engine", "openai", "--model", "m")
    with pytest.raises(CommandError, match="is not JSON"):
        _run("contender_add", "x", "--params", "{")
    with pytest.raises(CommandError, match="base_url"):
        _run("endpoint_add", "bad", "not a url")
    assert not Contender.objects.filter(name="x").exists()
    assert not Endpoint.objects.filter(name="bad").exists()


@pytest.mark.model
def test_a_script_adds_a_local_adapter_and_is_told_why_a_bad_one_is_refused(
    loras: dict[str, Path], tmp_path: Path
) -> None:
    assert "added contender pirate" in _run(
        "contender_add", "pirate", "--adapter-path", str(loras["pirate"])
    )
    bad = Path(shutil.copytree(loras["pirate"], tmp_path / "bad"))
    adapter_config_edit(bad, modules_to_save=["lm_head"])
    with pytest.raises(CommandError, match="modules_to_save"):
        _run("contender_add", "bad", "--adapter-path", str(bad))
