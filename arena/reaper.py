"""The reaper: a small loop in every web process that fails answers whose
worker died, and tells the page. One per event loop, started by the first
websocket connection; answers are failed by conditional UPDATEs, so several
processes reaping at once fail each answer once."""

from __future__ import annotations

import asyncio
import logging
import weakref

from channels.db import database_sync_to_async
from django.conf import settings

from arena.events import gen_error_event
from arena.services import answers_reap
from realtime.publisher import publish

log = logging.getLogger(__name__)
_tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def reaper_ensure() -> None:
    if not settings.ARENA_REAPER:
        return
    loop = asyncio.get_running_loop()
    task = _tasks.get(loop)
    if task is None or task.done():
        _tasks[loop] = loop.create_task(_reap_forever(), name="arena-reaper")


async def reap_once() -> int:
    reaped = await database_sync_to_async(answers_reap)(
        stale_after=settings.ARENA_STALE_SECONDS, pending_after=settings.ARENA_PENDING_SECONDS
    )
    for r in reaped:
        log.warning(
            "answer %s#%s of battle %s failed: %s: %s",
            r.side,
            r.attempt,
            r.battle_id,
            r.code,
            r.message,
        )
        event = gen_error_event(side=r.side, turn=r.turn, attempt=r.attempt, code=r.code)
        await publish(r.battle_id, event)
    return len(reaped)


async def _reap_forever() -> None:
    while True:
        await asyncio.sleep(settings.ARENA_REAP_INTERVAL_SECONDS)
        try:
            await reap_once()
        except Exception:  # a database hiccup must not end the loop
            log.exception("reaper pass failed")
