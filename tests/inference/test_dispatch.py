"""Queueing generations: one hop for a turn's answers, and what a refusing
broker leaves behind."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kombu.exceptions
import pytest

from arena import services
from arena.processes import worker_threads_start
from inference.dispatch import NotQueued, generation_start
from inference.tasks import generate_answer

pytestmark = pytest.mark.django_db


def test_known_engines_are_queued_without_a_query_and_a_refusal_names_the_rest(
    contenders: object,
    alice: str,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_assert_num_queries: Any,
) -> None:
    settings.ARENA_TASKS = "celery"
    battle = services.battle_create(session_key=alice)
    answers = services.turn_create(battle_id=battle.pk, session_key=alice, text="hi")
    ids = [a.pk for a in answers] + [answers[0].pk + 1000]
    sent: list[tuple[int, str]] = []

    def apply_async(*, args: tuple[int], queue: str) -> None:
        # The broker takes the first task, then goes away.
        if sent:
            raise kombu.exceptions.OperationalError("connection refused")
        sent.append((args[0], queue))

    monkeypatch.setattr(generate_answer, "apply_async", apply_async)
    engines = {pk: "openai" for pk in ids}
    with django_assert_num_queries(0), pytest.raises(NotQueued) as refused:
        asyncio.run(generation_start(ids, engines))
    assert sent == [(ids[0], settings.ARENA_QUEUE_HTTP)]
    assert refused.value.answer_ids == ids[1:]
    assert isinstance(refused.value.cause, kombu.exceptions.OperationalError)


def test_a_threads_pool_has_all_its_threads_before_the_first_task() -> None:
    executor = ThreadPoolExecutor(max_workers=12)
    try:
        before = threading.active_count()
        worker_threads_start(executor, 12)
        assert len(executor._threads) == 12
        assert threading.active_count() == before + 12
        # Tasks reuse them: no thread is started for these.
        results = [executor.submit(pow, i, 2) for i in range(30)]
        assert [r.result(timeout=10) for r in results] == [i * i for i in range(30)]
        assert len(executor._threads) == 12
    finally:
        executor.shutdown()
