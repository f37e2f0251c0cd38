"""Starting generations: Celery tasks, or threads of the web process."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache

from asgiref.sync import sync_to_async
from django.conf import settings

from inference.cancel import cancel_flags

log = logging.getLogger(__name__)


@cache
def _threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(settings.ARENA_THREAD_WORKERS, thread_name_prefix="generate")


async def generation_start(answer_ids: list[int]) -> None:
    """Queue one generation per answer. Call after the answers are committed."""
    if settings.ARENA_TASKS == "celery":
        from inference.tasks import generate_answer

        for answer_id in answer_ids:
            await sync_to_async(generate_answer.delay, thread_sensitive=False)(answer_id)
        return
    from inference.generation import generation_run

    loop = asyncio.get_running_loop()
    for answer_id in answer_ids:
        future = _threads().submit(generation_run, answer_id=answer_id, home_loop=loop)
        future.add_done_callback(_log_failure)


async def generation_cancel(answer_ids: list[int]) -> None:
    flags = cancel_flags()
    for answer_id in answer_ids:
        await sync_to_async(flags.request, thread_sensitive=False)(answer_id)


def _log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("generation thread failed", exc_info=exc)
