"""Celery tasks: thin, they take ids and call one service."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError

from arena.gcpolicy import gc_settle
from inference.generation import generation_run

# A claim that failed because the database was briefly away is retried; once
# claimed, the task handles its own failures (and a reaper the rest).
DB_RETRIED: dict[str, Any] = {
    "ignore_result": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 8,
    "retry_jitter": False,
    "max_retries": 5,
}
THREADS_START_SECONDS = 30.0


@shared_task(name="inference.tasks.generate_answer", **DB_RETRIED)
def generate_answer(answer_id: int) -> None:
    generation_run(answer_id=answer_id)


@shared_task(name="inference.tasks.judge_rag_answer", ignore_result=True)
def judge_rag_answer(answer_id: int) -> None:
    from inference.rag.scoring import answer_rag_judge

    answer_rag_judge(answer_id=answer_id)


@shared_task(name="inference.tasks.ingest_upload", **DB_RETRIED)
def ingest_upload(job_id: int) -> None:
    """An admin upload's documents ingested (queued on the local queue)."""
    from inference.rag.jobs import ingest_job_run

    ingest_job_run(job_id=job_id)


@shared_task(name="inference.tasks.serving_health_check", ignore_result=True, expires=120)
def serving_health_check() -> None:
    from inference.health import health_check_all

    health_check_all()


def _runs_local_answers(app: Any) -> bool:
    """Whether this worker consumes the local engine's queue: an HTTP-engine
    worker never loads a model."""
    queues = getattr(app.amqp.queues, "consume_from", None) or {}
    return not queues or settings.ARENA_QUEUE_LOCAL in queues


@worker_process_init.connect
def _preload_in_child(**kwargs: Any) -> None:
    from celery import current_app

    from inference.engines import engine_preload

    if _runs_local_answers(current_app):
        engine_preload()
    else:
        _rag_preload_start()
    gc_settle()


def _rag_preload_start() -> None:
    """An HTTP-engine worker loads no model, but it retrieves for RAG answers."""
    if not settings.ARENA_PRELOAD:
        return
    from inference.rag.answering import rag_preload

    threading.Thread(target=rag_preload, name="rag-preload", daemon=True).start()


@worker_ready.connect
def _preload_in_threads_worker(sender: Any = None, **kwargs: Any) -> None:
    # A threads or solo pool has no child processes: load in the worker itself
    # (and a threads pool starts its threads now). A prefork parent does not
    # load (its children do, above).
    pool: Any = getattr(sender, "pool", None)
    kind = type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else ""
    if kind == "thread":
        _threads_start(pool.executor, pool.limit)
    if kind in ("thread", "solo"):
        from inference.engines import engine_preload

        if _runs_local_answers(sender.app):
            engine_preload()
        else:
            _rag_preload_start()
        gc_settle()


def _threads_start(executor: ThreadPoolExecutor, count: int) -> None:
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
