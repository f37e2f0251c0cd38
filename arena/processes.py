"""What each long-running process starts once it is ready: the one place.

A web process (arena.asgi calls `web_process_ready`) warms what the first
vote would wait for; in the embedded default (ARENA_TASKS=thread) it also does
a worker's work, so it starts what a worker would: the local model and its
adapters, RAG's embedding model and indexes, the health monitor, the beat
thread, and the requeue of document ingestion jobs lost with a restart.

A Celery worker process (arena.celery connects `worker_process_ready` to
Celery's signals) preloads the local model if it consumes the local queue,
else only RAG's retrieval, and a threads pool starts all its threads.

Both freeze the garbage collector's view of what start-up loaded
(arena.gcpolicy). This module is the composition root of start-up: it is the
one module of arena that reaches into inference's serving side and ratings.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from django.conf import settings
from django.db import connection

from arena.beat import beat_start
from arena.concurrency import daemon
from arena.gcpolicy import gc_settle
from inference.engines import engine_get
from inference.engines.base import EngineError
from inference.health import health_monitor_start
from inference.models import Contender, Engine
from inference.rag.answering import rag_preload
from inference.rag.jobs import ingest_jobs_requeue
from ratings.categories import language_warm

log = logging.getLogger(__name__)
THREADS_START_SECONDS = 30.0
_started: set[str] = set()
_lock = threading.Lock()


def web_process_ready() -> None:
    """Start a web process's background work (once per process)."""
    if not _first("web"):
        return
    if settings.ARENA_TASKS == "thread":
        health_monitor_start()
        daemon("ingest-requeue", _ingest_requeue)
        if settings.ARENA_PRELOAD:
            daemon("engine-preload", _serving_preload)
    beat_start()  # the embedded default's CELERY_BEAT_SCHEDULE (no-op under Celery)
    daemon("warm-up", _vote_warm_up)
    gc_settle()


def worker_process_ready(*, consumes: frozenset[str] | None) -> None:
    """Start a worker process's background work (once per process).
    `consumes`: the queues it consumes, None when it consumes all."""
    if not _first("worker"):
        return
    if settings.ARENA_PRELOAD:
        local = consumes is None or settings.ARENA_QUEUE_LOCAL in consumes
        # An HTTP-engine worker loads no model, but it retrieves for RAG answers.
        daemon("engine-preload", _serving_preload if local else rag_preload)
    gc_settle()


def worker_threads_start(executor: Any, count: int) -> None:
    """Start all of a threads pool's threads now. The executor starts one per
    task until it has `count`: a fresh HTTP-engine worker (hundreds of
    threads, one per stream) would otherwise start them during its first
    peak, with the streams already running."""
    if not isinstance(executor, ThreadPoolExecutor):
        return
    gate = threading.Event()
    parked = [executor.submit(gate.wait, THREADS_START_SECONDS) for _ in range(count)]
    gate.set()
    wait(parked, timeout=THREADS_START_SECONDS)


def _first(kind: str) -> bool:
    with _lock:
        if kind in _started:
            return False
        _started.add(kind)
        return True


def _ingest_requeue() -> None:
    """The embedded default's document ingestion runs in this process's
    threads: jobs it had queued before a restart are queued again."""
    count = ingest_jobs_requeue()
    if count:
        log.info("queued %d waiting document ingestion jobs again", count)


def _serving_preload() -> None:
    """The local model and its adapters if enabled contenders use them, then
    RAG's embedding model and indexes."""
    local = Contender.objects.filter(enabled=True, engine=Engine.LOCAL)
    if local.exists():
        engine = engine_get("local")
        engine.load()  # type: ignore[attr-defined]
        for path in local.exclude(adapter_path="").values_list("adapter_path", flat=True):
            try:
                engine.adapter_load(path)  # type: ignore[attr-defined]
            except EngineError as exc:
                log.warning("adapter %s not preloaded: %s", path, exc.message)
    connection.close()  # nothing is held open while the model loads
    rag_preload()


def _vote_warm_up() -> None:
    """Load what the first vote would otherwise wait for (py3langid's model,
    for the vote's language category), beside the server's start-up."""
    language_warm()
    gc_settle()  # the model just loaded too
