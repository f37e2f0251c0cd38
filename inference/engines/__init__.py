"""Engines by name; one instance per process, except the OpenAI-compatible
engine, made per answer from its endpoint's current settings."""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from inference.engines.base import Engine, EngineError
from inference.engines.openai import EndpointConfig, OpenAIEngine

log = logging.getLogger(__name__)
_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_requeued = threading.Event()


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
        from inference.engines.local import LocalEngine

        return LocalEngine(
            cache=settings.ARENA_MODEL_CACHE,
            threads=settings.ARENA_TORCH_THREADS,
            max_rank=settings.ARENA_LORA_MAX_RANK,
            max_adapters=settings.ARENA_LOCAL_MAX_ADAPTERS,
        )
    raise EngineError("engine_unknown", f"no engine of kind {kind!r}")


def _ingest_requeue_start() -> None:
    """The embedded default's document ingestion runs in this process's
    threads: jobs it had queued before a restart are queued again (once per
    process)."""
    if _requeued.is_set():
        return
    _requeued.set()

    def requeue() -> None:
        from django.db import close_old_connections, connection

        from inference.rag.jobs import ingest_jobs_requeue

        close_old_connections()
        try:
            count = ingest_jobs_requeue()
            if count:
                log.info("queued %d waiting document ingestion jobs again", count)
        except Exception:  # tables not migrated yet, a database hiccup
            log.exception("queueing waiting ingestion jobs again failed")
        finally:
            connection.close()

    threading.Thread(target=requeue, name="ingest-requeue", daemon=True).start()


def engine_preload() -> None:
    """Warm this process's serving side in the background: load the local
    model and its adapters if enabled contenders use them, and, in the
    embedded default (no Celery beat), keep checking endpoint health."""
    if settings.ARENA_TASKS == "thread":
        from inference.health import health_monitor_start

        health_monitor_start()
        _ingest_requeue_start()
    if not settings.ARENA_PRELOAD:
        return

    def load() -> None:
        from django.db import connection

        from inference.models import Contender, Engine

        try:
            local = Contender.objects.filter(enabled=True, engine=Engine.LOCAL)
            wanted = local.exists()
            adapters = list(local.exclude(adapter_path="").values_list("adapter_path", flat=True))
        except Exception:  # tables not migrated yet: load on first use instead
            wanted, adapters = False, []
        finally:
            connection.close()
        if wanted:
            _local_preload(adapters)
        from inference.rag.answering import rag_preload

        rag_preload()

    threading.Thread(target=load, name="engine-preload", daemon=True).start()


def _local_preload(adapters: list[str]) -> None:
    engine = engine_get("local")
    engine.load()  # type: ignore[attr-defined]
    for path in adapters:
        try:
            engine.adapter_load(path)  # type: ignore[attr-defined]
        except EngineError as exc:
            log.warning("adapter %s not preloaded: %s", path, exc.message)
