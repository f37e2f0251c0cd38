"""Starting and stopping the answers of a turn (the consumer's one entry into
inference): Celery tasks on each engine kind's queue, or threads of the web
process (inference.queues)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings

from inference.cancel import cancel_flags
from inference.generation import generation_run
from inference.queues import log_failure, pool_for, queue_for
from inference.selectors import engine_kinds
from inference.tasks import generate_answer


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
    loop = asyncio.get_running_loop()
    for answer_id in answer_ids:
        future = pool_for(kinds.get(answer_id, "")).submit(
            generation_run, answer_id=answer_id, home_loop=loop
        )
        future.add_done_callback(log_failure)


def _queue(answer_ids: list[int], kinds: Mapping[int, str]) -> None:
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
