"""Fixtures for the serving tests: llama.cpp's server, the vLLM stand-in, a
Celery worker for the HTTP-engine queue, and contenders on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from inference.engines.openai import model_cache
from inference.models import Contender, Endpoint, Engine
from tests.conftest import TINY, Process
from tests.inference.servers import (
    LLAMA_ALIAS,
    LlamaServer,
    VLLMStandIn,
    http_worker_start,
    llama_server_fixture,
)


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server on the SmolLM2 GGUF, for the session."""
    yield from llama_server_fixture()


@pytest.fixture
def vllm() -> Iterator[VLLMStandIn]:
    """A stand-in for vLLM (which needs a GPU), replaying its formats."""
    server = VLLMStandIn()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_model_listings(settings: object) -> None:
    # Each test's servers live on new ports, but a listing must not leak anyway.
    model_cache.clear()
    # Importing arena.asgi in this process starts the embedded health monitor;
    # these tests run the checks themselves, when they mean to.
    settings.ARENA_HEALTH_MONITOR = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def http_worker(django_db_setup: None) -> Iterator[Process | None]:
    """A Celery worker on the HTTP-engine queue (none in the embedded default,
    where the web process's HTTP thread pool runs those answers)."""
    if settings.ARENA_TASKS != "celery":
        yield None
        return
    worker = http_worker_start()
    yield worker
    worker.stop()


@pytest.fixture
def llama_endpoint(db: None, llama_server: LlamaServer) -> Endpoint:
    return Endpoint.objects.create(
        name="llama-cpp", kind=Endpoint.Kind.OPENAI, base_url=llama_server.url
    )


@pytest.fixture
def gamma(llama_endpoint: Endpoint) -> Contender:
    """A contender on llama.cpp's server, through the OpenAI-compatible engine."""
    return Contender.objects.create(
        name="gamma", engine=Engine.OPENAI, endpoint=llama_endpoint, model=LLAMA_ALIAS, params=TINY
    )


@pytest.fixture(scope="session")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real LoRA adapters on SmolLM2: 'pirate' (q, v; r=8) and 'poet'
    (q, k, v, o; r=4), made once per session."""
    from tests.inference.loras import lora_adapter_make

    root = tmp_path_factory.mktemp("loras")
    return {
        "pirate": lora_adapter_make(root / "pirate", seed=1, r=8),
        "poet": lora_adapter_make(
            root / "poet", seed=2, r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        ),
    }
