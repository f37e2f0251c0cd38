"""Starting generations: Celery tasks, or threads of the web process.

Each engine kind has its own queue: the local engine is CPU-bound and sized to
the machine; HTTP-streaming engines mostly wait on sockets, so their workers
run many threads. In the embedded default the same split holds between two
thread pools of the web process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings

from inference.cancel import cancel_flags
from inference.models import Engine
from inference.selectors import engine_kinds

log = logging.getLogger(__name__)

HTTP_ENGINES = frozenset({Engine.OPENAI.value})


def queue_for(engine: str) -> str:
    """The Celery queue for answers of an engine kind."""
    return settings.ARENA_QUEUE_HTTP if engine in HTTP_ENGINES else settings.ARENA_QUEUE_LOCAL


@cache
def _threads(kind: str) -> ThreadPoolExecutor:
    if kind == "http":
        return ThreadPoolExecutor(settings.ARENA_HTTP_THREAD_WORKERS, thread_name_prefix="gen-http")
    return ThreadPoolExecutor(settings.ARENA_THREAD_WORKERS, thread_name_prefix="generate")


class NotQueued(Exception):
    """The broker refused these answers (the first ones were queued): `cause`
    is its error."""

    def __init__(self, answer_ids: list[int], cause: BaseException) -> None:
        super().__init__(f"answers {answer_ids} not queued: {cause!r}")
        self.answer_ids = answer_ids
        self.cause = cause


async def generation_start(answer_ids: list[int], engines: Mapping[int, str] | None = None) -> None:
    """Queue one generation per answer. Call after the answers are committed.
    `engines`: each answer's engine kind when the caller has it (else read).
    Raises NotQueued from the broker's error; answers before it were queued."""
    kinds = engines
    if kinds is None:
        kinds = await database_sync_to_async(engine_kinds)(answer_ids)
    if settings.ARENA_TASKS == "celery":
        # One thread hop for all of them, not one per answer.
        await sync_to_async(_queue, thread_sensitive=False)(answer_ids, kinds)
        return
    from inference.generation import generation_run

    loop = asyncio.get_running_loop()
    for answer_id in answer_ids:
        pool = _threads("http" if kinds.get(answer_id) in HTTP_ENGINES else "local")
        future = pool.submit(generation_run, answer_id=answer_id, home_loop=loop)
        future.add_done_callback(_log_failure)


def _queue(answer_ids: list[int], kinds: Mapping[int, str]) -> None:
    from inference.tasks import generate_answer

    for i, answer_id in enumerate(answer_ids):
        try:
            generate_answer.apply_async(
                args=(answer_id,), queue=queue_for(kinds.get(answer_id, ""))
            )
        except Exception as exc:
            raise NotQueued(answer_ids[i:], exc) from exc


async def generation_cancel(answer_ids: list[int]) -> None:
    flags = cancel_flags()
    for answer_id in answer_ids:
        await sync_to_async(flags.request, thread_sensitive=False)(answer_id)


def _log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("generation thread failed", exc_info=exc)


def judge_start(*, answer_id: int, engine: str) -> None:
    """Queue an LLM judge's grading of a RAG answer on the judge's engine queue
    (from a worker or a generation thread: plain sync code)."""
    if settings.ARENA_TASKS == "celery":
        from inference.tasks import judge_rag_answer

        judge_rag_answer.apply_async(args=(answer_id,), queue=queue_for(engine))
        return
    from inference.rag.scoring import answer_rag_judge

    pool = _threads("http" if engine in HTTP_ENGINES else "local")
    pool.submit(_closing(answer_rag_judge), answer_id=answer_id).add_done_callback(_log_failure)


def _closing(fn: Callable[..., object]) -> Callable[..., None]:
    def run(**kwargs: object) -> None:
        from django.db import connection

        try:
            fn(**kwargs)
        finally:
            connection.close()

    return run


def ingest_start(*, job_id: int) -> None:
    """Queue an admin upload's ingestion (call after its job is committed) on
    the local queue: it is CPU-bound, and those workers have the model loaded."""
    if settings.ARENA_TASKS == "celery":
        from inference.tasks import ingest_upload

        try:
            ingest_upload.apply_async(args=(job_id,), queue=settings.ARENA_QUEUE_LOCAL)
        except Exception:
            log.exception("ingest job %s could not be queued", job_id)
            from inference.rag.jobs import UNQUEUED_MESSAGE, ingest_job_fail

            ingest_job_fail(job_id=job_id, error=UNQUEUED_MESSAGE)
        return
    from inference.rag.jobs import ingest_job_run

    _threads("local").submit(_closing(ingest_job_run), job_id=job_id).add_done_callback(
        _log_failure
    )
