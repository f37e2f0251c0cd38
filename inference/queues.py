"""Where background work runs: a Celery queue, or a thread pool of the web process.

Each engine kind has its own queue: the local engine is CPU-bound and sized to
the machine; HTTP-streaming engines mostly wait on sockets, so their workers
run many threads. In the embedded default the same split holds between two
thread pools of the web process.

Work is queued by task name (`work_start`): the module that does the work
queues it, and nothing here imports the tasks, so the modules below the tasks
never import back up to them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache

from celery import current_app
from django.conf import settings
from django.db import connection

from inference.models import Engine

log = logging.getLogger(__name__)

HTTP_ENGINES = frozenset({Engine.OPENAI.value})
# The Celery tasks' names (inference.tasks registers them under these).
GENERATE_TASK = "inference.tasks.generate_answer"
JUDGE_TASK = "inference.tasks.judge_rag_answer"
INGEST_TASK = "inference.tasks.ingest_upload"
HEALTH_TASK = "inference.tasks.serving_health_check"


def queue_for(engine: str) -> str:
    """The Celery queue for answers of an engine kind."""
    return settings.ARENA_QUEUE_HTTP if engine in HTTP_ENGINES else settings.ARENA_QUEUE_LOCAL


@cache
def thread_pool(kind: str) -> ThreadPoolExecutor:
    """The embedded default's pool for `kind` ("http" or "local")."""
    if kind == "http":
        return ThreadPoolExecutor(settings.ARENA_HTTP_THREAD_WORKERS, thread_name_prefix="gen-http")
    return ThreadPoolExecutor(settings.ARENA_THREAD_WORKERS, thread_name_prefix="generate")


def pool_for(engine: str) -> ThreadPoolExecutor:
    return thread_pool("http" if engine in HTTP_ENGINES else "local")


def work_start(task: str, run: Callable[..., object], *, engine: str, **kwargs: int) -> None:
    """Queue `task` with `kwargs` on the queue of an engine kind; in the
    embedded default, `run(**kwargs)` in that kind's thread pool, its
    connection closed after."""
    if settings.ARENA_TASKS == "celery":
        current_app.send_task(task, kwargs=kwargs, queue=queue_for(engine))
        return
    pool_for(engine).submit(_closing(run), **kwargs).add_done_callback(log_failure)


def log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("background work failed", exc_info=exc)


def _closing(fn: Callable[..., object]) -> Callable[..., None]:
    def run(**kwargs: object) -> None:
        try:
            fn(**kwargs)
        finally:
            connection.close()

    return run
