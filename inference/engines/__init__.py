"""Engines by name; one instance per process."""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from inference.engines.base import Engine, EngineError

log = logging.getLogger(__name__)
_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def engine_get(kind: str) -> Engine:
    with _lock:
        if kind not in _engines:
            _engines[kind] = _engine_make(kind)
        return _engines[kind]


def _engine_make(kind: str) -> Engine:
    if kind == "local":
        from inference.engines.local import LocalEngine

        return LocalEngine(cache=settings.ARENA_MODEL_CACHE, threads=settings.ARENA_TORCH_THREADS)
    raise EngineError("engine_unknown", f"no engine of kind {kind!r}")


def engine_preload() -> None:
    """Load the local model in the background if any enabled contender uses it."""
    if not settings.ARENA_PRELOAD:
        return

    def load() -> None:
        from django.db import connection

        from inference.models import Contender, Engine

        try:
            wanted = Contender.objects.filter(enabled=True, engine=Engine.LOCAL).exists()
        except Exception:  # tables not migrated yet: load on first use instead
            wanted = False
        finally:
            connection.close()
        if wanted:
            engine = engine_get("local")
            engine.load()  # type: ignore[attr-defined]

    threading.Thread(target=load, name="engine-preload", daemon=True).start()
