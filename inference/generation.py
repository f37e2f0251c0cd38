"""One side's answer to one turn: claim it, stream it, publish it, save it.

The database is touched only to claim, to save progress every few seconds
and to save the outcome, each on a short-lived connection: nothing is held
open while the model streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from arena.events import GenDeltaEvent, GenErrorEvent
from arena.markdown import render_markdown
from arena.models import Answer
from arena.selectors import answer_stats
from arena.services import (
    AnswerOutcome,
    GenerationJob,
    answer_claim,
    answer_complete,
    answer_progress,
)
from inference.cancel import cancel_watch
from inference.engines import engine_for
from inference.engines.base import Engine, EngineError, StreamEnd, TextDelta
from inference.health import endpoint_unreachable
from inference.publish import Publisher
from inference.rag.answering import rag_answer_review, rag_job_prepare

log = logging.getLogger(__name__)
PROGRESS_SAVE_SECONDS = 2.0
# Up to ~15 s in all: past that the reaper has failed the answer anyway.
OUTCOME_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
DB_ERRORS = (OperationalError, InterfaceError)
T = TypeVar("T")


def generation_run(*, answer_id: int, home_loop: asyncio.AbstractEventLoop | None = None) -> None:
    """The body of the generation task (a Celery task or a web-process thread)."""
    close_old_connections()
    try:
        job = answer_claim(answer_id=answer_id)
    finally:
        connection.close()
    if job is None:
        log.info("answer %s is not pending any more; nothing to do", answer_id)
        return
    publisher = Publisher(job.battle_id, home_loop)
    try:
        _loop_run(_generate(job, publisher))
    except Exception:
        # Never leave an answer streaming forever: fail it, tell the page.
        log.exception("generation of answer %s failed", answer_id)
        _fail(job, publisher, "internal", "The answer failed on the server; regenerate it.")


def _loop_run(main: Coroutine[Any, Any, T]) -> T:
    """Run a generation's event loop: uvloop's when installed (it comes with
    uvicorn[standard]), about a sixth less CPU per relayed token."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _fail(job: GenerationJob, publisher: Publisher, code: str, message: str) -> None:
    try:
        saved = answer_complete(
            answer_id=job.answer_id,
            outcome=AnswerOutcome(
                status=Answer.Status.ERROR, text="", error_code=code, error_message=message
            ),
        )
        connection.close()
        if saved:
            event: GenErrorEvent = {
                "type": "gen.error",
                "side": job.side,
                "turn": job.turn,
                "attempt": job.attempt,
                "code": code,
                "message": message,
            }
            _loop_run(publisher.send(event))
    except Exception:
        log.exception("could not mark answer %s failed", job.answer_id)


async def _db(fn: Callable[..., T], **kwargs: Any) -> T:
    def call() -> T:
        try:
            return fn(**kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(call)


async def _progress_save(answer_id: int, text: str) -> None:
    """Progress is a convenience (resync, heartbeat): a database that is away
    for a moment must not stop the stream; the outcome is saved at the end."""
    try:
        await _db(answer_progress, answer_id=answer_id, text=text)
    except DB_ERRORS as exc:
        log.warning("could not save the progress of answer %s: %r", answer_id, exc)


async def _db_retried(fn: Callable[..., T], **kwargs: Any) -> T:
    """`_db`, retried with back-off while the database is unreachable, so an
    answer finished during a short outage is still saved."""
    for delay in OUTCOME_RETRY_DELAYS:
        try:
            return await _db(fn, **kwargs)
        except DB_ERRORS as exc:
            log.warning("database unavailable (%r); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
    return await _db(fn, **kwargs)


async def _beating(job: GenerationJob, fn: Callable[..., T]) -> T:
    """Run `fn(job=job)` in a thread, beating the answer's heartbeat meanwhile:
    a first retrieval loads the embedding model and builds the index, which
    can take longer than the reaper waits for a silent worker."""
    task = asyncio.ensure_future(_db(fn, job=job))
    while True:
        done, _ = await asyncio.wait({task}, timeout=PROGRESS_SAVE_SECONDS)
        if done:
            return task.result()
        await _progress_save(job.answer_id, "")


class _Pump:
    """Moves engine events into a queue, so waiting for the next one can time
    out safely (timing out an async generator's __anext__ would break it)."""

    _END = object()

    def __init__(self, engine: Engine, job: GenerationJob) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.stream = engine.stream(job.request)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self.stream:
                await self.queue.put(event)
        except EngineError as exc:
            await self.queue.put(exc)
        except Exception as exc:
            log.exception("engine failed")
            await self.queue.put(EngineError("engine_failed", f"The model failed: {exc}"))
        finally:
            await self.queue.put(self._END)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.stream.aclose()  # type: ignore[attr-defined]


async def _generate(job: GenerationJob, publisher: Publisher) -> None:
    side, turn, attempt = job.side, job.turn, job.attempt
    await publisher.send({"type": "gen.start", "side": side, "turn": turn, "attempt": attempt})
    interval = settings.ARENA_DELTA_INTERVAL
    watch = cancel_watch()
    watch.watch(job.answer_id)
    started = time.monotonic()
    deadline = started + settings.ARENA_GENERATION_TIMEOUT
    text, pending = "", ""
    seq = 0
    tokens_seen = 0
    ttft: float | None = None
    end: StreamEnd | None = None
    error: EngineError | None = None
    stopped = False
    last_flush = last_save = started

    async def flush() -> None:
        nonlocal pending, seq, last_flush
        if pending:
            delta: GenDeltaEvent = {
                "type": "gen.delta",
                "side": side,
                "turn": turn,
                "attempt": attempt,
                "seq": seq,
                "offset": len(text) - len(pending),
                "text": pending,
            }
            await publisher.send(delta)
            seq += 1
            pending = ""
        last_flush = time.monotonic()

    pump: _Pump | None = None
    try:
        job = await _beating(job, rag_job_prepare)
        pump = _Pump(engine_for(job.engine, job.endpoint), job)
    except EngineError as exc:
        error = exc
    except Exception as exc:
        log.exception("retrieval for answer %s failed", job.answer_id)
        error = EngineError("retrieval_failed", f"Retrieval from the knowledge base failed: {exc}")
    try:
        while pump is not None:
            now = time.monotonic()
            wait = interval - (now - last_flush) if pending else interval
            try:
                event = await asyncio.wait_for(pump.queue.get(), timeout=max(wait, 0.001))
            except TimeoutError:
                event = None
            now = time.monotonic()
            if isinstance(event, TextDelta):
                if ttft is None:
                    ttft = now - started
                text += event.text
                pending += event.text
                tokens_seen += event.tokens
            elif isinstance(event, StreamEnd):
                end = event
                break
            elif isinstance(event, EngineError):
                error = event
                break
            elif event is _Pump._END:
                error = EngineError("engine_failed", "The model stopped without finishing.")
                break
            if pending and now - last_flush >= interval:
                await flush()
            if watch.requested(job.answer_id):
                stopped = True
                break
            if now - last_save >= PROGRESS_SAVE_SECONDS:
                last_save = now
                await _progress_save(job.answer_id, text)
            if now > deadline:
                error = EngineError("timeout", "The model took too long to answer.")
                break
    finally:
        watch.unwatch(job.answer_id)
        if pump is not None:
            await pump.close()
    await flush()
    duration = time.monotonic() - started

    if error is not None:
        outcome = AnswerOutcome(
            status=Answer.Status.ERROR,
            text=text,
            finish_reason="error",
            tokens=tokens_seen,
            ttft_ms=ttft * 1000 if ttft is not None else None,
            duration_ms=duration * 1000,
            error_code=error.code,
            error_message=error.message,
        )
    else:
        outcome = AnswerOutcome(
            status=Answer.Status.STOPPED if stopped else Answer.Status.DONE,
            text=text,
            finish_reason="stopped" if stopped else (end.finish_reason if end else "stop"),
            prompt_tokens=end.prompt_tokens if end else None,
            tokens=end.completion_tokens if end else tokens_seen,
            ttft_ms=ttft * 1000 if ttft is not None else None,
            duration_ms=duration * 1000,
        )
    saved = await _db_retried(answer_complete, answer_id=job.answer_id, outcome=outcome)
    if error is not None and error.code == "engine_unreachable" and job.endpoint_id is not None:
        # Out of pair sampling at once; the health check brings it back.
        await _db(endpoint_unreachable, endpoint_id=job.endpoint_id, message=error.message)
    if not saved:
        log.warning("answer %s was finished elsewhere; dropping this outcome", job.answer_id)
        return
    if error is not None:
        await publisher.send(
            {
                "type": "gen.error",
                "side": side,
                "turn": turn,
                "attempt": attempt,
                "code": error.code,
                "message": error.message,
            }
        )
        return
    stats = answer_stats(
        Answer(
            tokens=outcome.tokens,
            prompt_tokens=outcome.prompt_tokens,
            ttft_ms=outcome.ttft_ms,
            duration_ms=outcome.duration_ms,
            finish_reason=outcome.finish_reason,
        )
    )
    await publisher.send(
        {
            "type": "gen.done",
            "side": side,
            "turn": turn,
            "attempt": attempt,
            "text": text,
            "html": render_markdown(text),
            "stats": stats,
        }
    )
    if job.rag is not None and outcome.status != Answer.Status.ERROR:
        # After gen.done: the visitor never waits for the scores.
        try:
            await _db(rag_answer_review, answer_id=job.answer_id, judge_engine=job.rag.judge_engine)
        except Exception:
            log.exception("scoring RAG answer %s failed", job.answer_id)
