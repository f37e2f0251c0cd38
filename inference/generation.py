"""One side's answer to one turn: claim it, stream it, publish it, save it.

The database is touched only to claim, to save progress every few seconds
and to save the outcome, each on a short-lived connection: nothing is held
open while the model streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from arena.events import (
    gen_delta_event,
    gen_done_event,
    gen_error_event,
    gen_start_event,
    public_stats,
)
from arena.markdown import render_markdown
from arena.models import Answer
from arena.services import AnswerOutcome, answer_complete, answers_progress
from inference.cancel import cancel_watch
from inference.engines import engine_for
from inference.engines.base import EngineError, StreamEnd, StreamEvent, TextCleaner, text_clean
from inference.health import endpoint_unreachable
from inference.jobs import GenerationJob, answer_claim
from inference.rag.answering import rag_answer_review, rag_job_prepare
from realtime.publisher import Publisher

log = logging.getLogger(__name__)
PROGRESS_SAVE_SECONDS = 2.0
# Up to ~15 s in all: past that the reaper has failed the answer anyway.
OUTCOME_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
DB_ERRORS = (OperationalError, InterfaceError)
T = TypeVar("T")


def generation_run(*, answer_id: int, home_loop: asyncio.AbstractEventLoop | None = None) -> None:
    """The body of the generation task (a Celery task or a web-process thread):
    claims and streams the answer on the process's generation loop, and waits
    for it to end."""
    coro = _claim_and_generate(answer_id, home_loop)
    asyncio.run_coroutine_threadsafe(coro, generation_loop()).result()


async def _claim_and_generate(answer_id: int, home_loop: asyncio.AbstractEventLoop | None) -> None:
    # The claim runs on the loop's few database threads, not on the task's
    # own thread: a hundred answers queued at once would otherwise be a
    # hundred threads compiling queries together, and the loop's thread,
    # which relays every stream's tokens, would wait its turn for the GIL
    # behind all of them (bench/load.py: p99 over 400 ms in the first seconds).
    job = await _db(answer_claim, answer_id=answer_id)
    if job is None:
        log.info("answer %s is not pending any more; nothing to do", answer_id)
        return
    await _generate_guarded(job, Publisher(job.battle_id, home_loop))


_loop_lock = threading.Lock()
_loop_held: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None


def generation_loop() -> asyncio.AbstractEventLoop:
    """This process's one event loop for all its generations, in a daemon
    thread (uvloop's when installed: it comes with uvicorn[standard]).

    One loop for hundreds of streams, not a thread and a loop per answer:
    the threads' loops fought for the GIL, and each kept its own Redis
    connections (bench/load.py). Database calls go to the loop's executor,
    sized by ARENA_GENERATION_DB_THREADS. Created lazily, so a forked worker
    child makes its own."""
    global _loop_held
    with _loop_lock:
        held = _loop_held
        if held is not None and held[0] == os.getpid() and held[2].is_alive():
            return held[1]
        loop = _new_loop()
        loop.set_default_executor(
            ThreadPoolExecutor(settings.ARENA_GENERATION_DB_THREADS, thread_name_prefix="gen-db")
        )
        thread = threading.Thread(target=loop.run_forever, name="generation-loop", daemon=True)
        thread.start()
        _loop_held = (os.getpid(), loop, thread)
        return loop


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _generate_guarded(job: GenerationJob, publisher: Publisher) -> None:
    try:
        await _generate(job, publisher)
    except Exception as exc:
        # Never leave an answer streaming forever: fail it, tell the page.
        log.exception("generation of answer %s failed", job.answer_id)
        await _fail(job, publisher, "internal", text_clean(f"{type(exc).__name__}: {exc}"))


async def _fail(job: GenerationJob, publisher: Publisher, code: str, message: str) -> None:
    try:
        saved = await _db(
            answer_complete,
            answer_id=job.answer_id,
            outcome=AnswerOutcome(
                status=Answer.Status.ERROR,
                text="",
                finish_reason="error",
                error_code=code,
                error_message=message,
            ),
        )
        if saved is not None:
            await publisher.send(
                gen_error_event(
                    side=job.side, turn=job.turn, attempt=job.attempt, code=saved.error_code
                )
            )
    except Exception:
        log.exception("could not mark answer %s failed", job.answer_id)


async def _db(fn: Callable[..., T], **kwargs: Any) -> T:
    def call() -> T:
        try:
            return fn(**kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(call)


class _ProgressBook:
    """The heartbeats and partial texts of a loop's streaming answers, saved
    together: one UPDATE every PROGRESS_SAVE_SECONDS for all of them, not one
    each (bench/load.py: the saves of 100 answers started together came as a
    burst every 2 s, 13% of a worker's CPU, and showed in the tail latency).

    Progress is a convenience (resync, heartbeat): a database away for a
    moment must not stop the streams; the outcomes are saved at their end."""

    def __init__(self) -> None:
        self._relays: dict[int, _Relay] = {}
        self._saved: dict[int, int] = {}  # answer id -> length of the text saved
        self._task: asyncio.Task[None] | None = None

    def track(self, answer_id: int, relay: _Relay) -> None:
        self._relays[answer_id] = relay
        self._saved[answer_id] = 0
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def untrack(self, answer_id: int) -> None:
        self._relays.pop(answer_id, None)
        self._saved.pop(answer_id, None)

    async def _run(self) -> None:
        while self._relays:
            await asyncio.sleep(PROGRESS_SAVE_SECONDS)
            await self.save()

    async def save(self) -> None:
        texts: dict[int, str | None] = {}
        for answer_id, relay in self._relays.items():
            changed = len(relay.text) != self._saved.get(answer_id)
            texts[answer_id] = relay.text if changed else None
        if not texts:
            return
        try:
            await _db(answers_progress, texts=texts)
        except DB_ERRORS as exc:
            log.warning("could not save the progress of %d answers: %r", len(texts), exc)
            return
        except Exception:
            log.exception("saving the progress of %d answers failed", len(texts))
            return
        for answer_id, text in texts.items():
            if text is not None and answer_id in self._saved:
                self._saved[answer_id] = len(text)


_books: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ProgressBook] = (
    weakref.WeakKeyDictionary()
)


def _progress_book() -> _ProgressBook:
    loop = asyncio.get_running_loop()
    book = _books.get(loop)
    if book is None:
        book = _books[loop] = _ProgressBook()
    return book


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


class _Relay:
    """Reads one answer's engine stream and publishes it as coalesced deltas.

    A delta goes out at once when the last one left at least `interval` ago,
    else a timer sends it when the interval is up: at 20 tokens/s every token
    leaves as it comes, faster streams are merged. Nothing here wakes up
    between tokens; the sends keep their order (one lock, first come first
    served)."""

    def __init__(self, job: GenerationJob, publisher: Publisher, interval: float) -> None:
        self.job = job
        self.publisher = publisher
        self.interval = interval
        self.text = ""
        self.pending = ""
        self.seq = 0
        self.tokens = 0
        self.first_at: float | None = None
        self.last_flush = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        # At the engine boundary: nothing published or saved carries a NUL or
        # a lone surrogate (on PostgreSQL one such answer failed the batched
        # progress UPDATE of every answer of its worker).
        self._cleaner = TextCleaner()

    async def read(self, stream: AsyncIterator[StreamEvent]) -> StreamEnd:
        """Relays the stream to its end; raises EngineError when it fails."""
        try:
            async for event in stream:
                if isinstance(event, StreamEnd):
                    self._append(self._cleaner.end())
                    return event
                now = self._loop.time()
                if self.first_at is None:
                    self.first_at = now
                self._append(self._cleaner.feed(event.text))
                self.tokens += event.tokens
                if now - self.last_flush >= self.interval:
                    await self.flush()
                elif self._timer is None:
                    self._timer = self._loop.call_at(self.last_flush + self.interval, self._due)
        except EngineError:
            raise
        except Exception as exc:
            log.exception("engine failed")
            raise EngineError("engine_failed", f"The model failed: {exc}") from exc
        raise EngineError("engine_failed", "The model stopped without finishing.")

    def _append(self, text: str) -> None:
        self.text += text
        self.pending += text

    def _due(self) -> None:
        self._timer = None
        self._flushing = self._loop.create_task(self.flush())  # held: tasks are weakly kept

    async def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.last_flush = self._loop.time()
        if not self.pending:
            return
        job = self.job
        delta = gen_delta_event(
            side=job.side,
            turn=job.turn,
            attempt=job.attempt,
            seq=self.seq,
            offset=len(self.text) - len(self.pending),
            text=self.pending,
        )
        self.seq += 1
        self.pending = ""
        async with self._sending:
            await self.publisher.send(delta)


def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None:
        task.cancel()


@dataclass(frozen=True)
class StreamResult:
    """What one answer's stream came to, in plain values (times in seconds)."""

    text: str
    tokens_seen: int  # as counted from the deltas, for a stream without its end
    ttft: float | None
    duration: float
    end: StreamEnd | None = None
    error: EngineError | None = None
    stopped: bool = False  # by the visitor (or nobody watching), not by the time limit


def stream_outcome(result: StreamResult) -> AnswerOutcome:
    """The answer to save for a stream's result: status, finish reason,
    tokens and timings (in ms)."""
    ttft_ms = result.ttft * 1000 if result.ttft is not None else None
    error, end = result.error, result.end
    if error is not None:
        return AnswerOutcome(
            status=Answer.Status.ERROR,
            text=result.text,
            finish_reason="error",
            tokens=result.tokens_seen,
            ttft_ms=ttft_ms,
            duration_ms=result.duration * 1000,
            error_code=error.code,
            # A server's error body may carry what the database refuses too.
            error_message=text_clean(error.message),
        )
    if result.stopped:
        finish_reason = "stopped"
    else:
        finish_reason = text_clean(end.finish_reason) if end else "stop"
    return AnswerOutcome(
        status=Answer.Status.STOPPED if result.stopped else Answer.Status.DONE,
        text=result.text,
        finish_reason=finish_reason,
        prompt_tokens=end.prompt_tokens if end else None,
        tokens=end.completion_tokens if end else result.tokens_seen,
        ttft_ms=ttft_ms,
        duration_ms=result.duration * 1000,
    )


async def _generate(job: GenerationJob, publisher: Publisher) -> None:
    await publisher.send(gen_start_event(side=job.side, turn=job.turn, attempt=job.attempt))
    job, result = await _stream(job, publisher)
    error = result.error
    if error is not None:
        # The detail names the contender's setup: the log and the admin see
        # it, the visitor gets the code's fixed message.
        log.warning("answer %s failed: %s: %s", job.answer_id, error.code, error.message)
    outcome = stream_outcome(result)
    saved = await _db_retried(answer_complete, answer_id=job.answer_id, outcome=outcome)
    if error is not None and error.code == "engine_unreachable" and job.endpoint_id is not None:
        # Out of pair sampling at once; the health check brings it back.
        await _db(endpoint_unreachable, endpoint_id=job.endpoint_id, message=error.message)
    if saved is None:
        log.warning("answer %s was finished elsewhere; dropping this outcome", job.answer_id)
        return
    await _announce(job, publisher, saved=saved, outcome=outcome)


async def _prepare(
    job: GenerationJob,
) -> tuple[GenerationJob, AsyncIterator[StreamEvent] | None, EngineError | None]:
    """The job with its retrieved passages (RAG contenders), and its engine's
    stream; or the error that keeps it from streaming."""
    try:
        job = await _db(rag_job_prepare, job=job)
        return job, engine_for(job.engine, job.endpoint).stream(job.request), None
    except EngineError as exc:
        return job, None, exc
    except Exception as exc:
        log.exception("retrieval for answer %s failed", job.answer_id)
        error = EngineError("retrieval_failed", f"Retrieval from the knowledge base failed: {exc}")
        return job, None, error


async def _stream(job: GenerationJob, publisher: Publisher) -> tuple[GenerationJob, StreamResult]:
    """Prepares the job and relays its stream, within the time limit and
    until a stop; returns the job as prepared and what the stream came to."""
    loop = asyncio.get_running_loop()
    relay = _Relay(job, publisher, settings.ARENA_DELTA_INTERVAL_MS / 1000)
    started = loop.time()
    deadline = started + settings.ARENA_GENERATION_TIMEOUT_SECONDS
    end: StreamEnd | None = None
    error: EngineError | None = None
    stopped = False
    reading: asyncio.Task[StreamEnd] | None = None
    stream: AsyncIterator[StreamEvent] | None = None

    def stop_requested() -> None:  # from the cancel watch's thread
        loop.call_soon_threadsafe(lambda: _cancel(reading))

    watch = cancel_watch()
    watch.watch(job.answer_id, stop_requested)
    # The heartbeat from here on, retrieval included (a first retrieval loads
    # the embedding model and builds the index: longer than the reaper waits
    # for a silent worker), with the partial text once it streams.
    book = _progress_book()
    book.track(job.answer_id, relay)
    try:
        job, stream, error = await _prepare(job)
        relay.job = job
        if stream is not None:
            reading = asyncio.ensure_future(relay.read(stream))
            if watch.requested(job.answer_id):  # asked while retrieving
                reading.cancel()
            end, error, stopped = await _read_within(reading, deadline)
    finally:
        book.untrack(job.answer_id)
        watch.unwatch(job.answer_id)
        if stream is not None:
            # Closing mid-stream drops the model server's connection: it stops.
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
    await relay.flush()
    ttft = relay.first_at - started if relay.first_at is not None else None
    result = StreamResult(
        text=relay.text,
        tokens_seen=relay.tokens,
        ttft=ttft,
        duration=loop.time() - started,
        end=end,
        error=error,
        stopped=stopped,
    )
    return job, result


async def _read_within(
    reading: asyncio.Task[StreamEnd], deadline: float
) -> tuple[StreamEnd | None, EngineError | None, bool]:
    """Waits for the relay's reading to end by `deadline` (a stop cancels
    `reading`; the heartbeat is the book's): its end, its error, and whether
    it was stopped. An error that is no EngineError is raised."""
    loop = asyncio.get_running_loop()
    error: EngineError | None = None
    await asyncio.wait({reading}, timeout=max(deadline - loop.time(), 0.0))
    if not reading.done():
        error = EngineError("timeout", "The model took too long to answer.")
        _cancel(reading)
    await asyncio.wait({reading})
    if reading.cancelled():
        return None, error, error is None
    failure = reading.exception()
    if isinstance(failure, EngineError):
        return None, failure, False
    if failure is not None:
        raise failure
    return reading.result(), error, False


async def _announce(
    job: GenerationJob, publisher: Publisher, *, saved: AnswerOutcome, outcome: AnswerOutcome
) -> None:
    """Tells the page how the saved answer ended, then scores a RAG answer."""
    if saved.status == Answer.Status.ERROR:
        # `saved`, not `outcome`: an outcome the database refused was saved as a failure.
        code = saved.error_code
        await publisher.send(
            gen_error_event(side=job.side, turn=job.turn, attempt=job.attempt, code=code)
        )
        return
    # Timings and prompt tokens fingerprint a contender: they wait for the
    # reveal (vote.recorded, and the battle.state after it).
    stats = public_stats(tokens=outcome.tokens, finish_reason=outcome.finish_reason)
    await publisher.send(
        gen_done_event(
            side=job.side,
            turn=job.turn,
            attempt=job.attempt,
            text=outcome.text,
            html=render_markdown(outcome.text),
            stats=stats,
        )
    )
    if job.rag is not None and outcome.status != Answer.Status.ERROR:
        # After gen.done: the visitor never waits for the scores.
        try:
            await _db(rag_answer_review, answer_id=job.answer_id, judge_engine=job.rag.judge_engine)
        except Exception:
            log.exception("scoring RAG answer %s failed", job.answer_id)
