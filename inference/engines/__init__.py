"""Engines by name; one instance per process, except the OpenAI-compatible
engine, made per answer from its endpoint's current settings."""

from __future__ import annotations

import threading

from django.conf import settings

from inference.engines.base import Engine, EngineError
from inference.engines.local import LocalEngine
from inference.engines.openai import EndpointConfig, OpenAIEngine

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def engine_get(kind: str) -> Engine:
    with _lock:
        if kind not in _engines:
            _engines[kind] = _engine_make(kind)
        return _engines[kind]


def engine_for(kind: str, endpoint: EndpointConfig | None = None) -> Engine:
    """The engine that runs an answer: its endpoint's, or the shared one of its kind."""
    if endpoint is not None:
        return OpenAIEngine(endpoint)
    if kind == "openai":
        raise EngineError("engine_misconfigured", "This contender has no endpoint.")
    return engine_get(kind)


def _engine_make(kind: str) -> Engine:
    if kind == "local":
        return LocalEngine(
            cache=settings.ARENA_MODEL_CACHE,
            threads=settings.ARENA_TORCH_THREADS,
            max_rank=settings.ARENA_LORA_MAX_RANK,
            max_adapters=settings.ARENA_LOCAL_MAX_ADAPTERS,
        )
    raise EngineError("engine_unknown", f"no engine of kind {kind!r}")
