"""Generation in threads of this process: coalescing, failures mid-stream,
and the data that is saved. (The Celery path is covered by the consumer tests
when REDIS_URL is set.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async

from arena.models import Answer
from inference import engines
from inference.engines.base import EngineError, GenerationRequest, StreamEvent, TextDelta
from inference.models import Contender
from tests.arena.wsclient import Client, of_type

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]


class DyingEngine:
    """The real local model, whose process 'dies' after a few deltas."""

    def __init__(self, after: int) -> None:
        self.after = after

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        seen = 0
        inner = engines.engine_get("local").stream(request)
        try:
            async for event in inner:
                if isinstance(event, TextDelta):
                    seen += 1
                    if seen > self.after:
                        raise EngineError("engine_failed", "The model server went away.")
                yield event
        finally:
            await inner.aclose()  # type: ignore[attr-defined]


@pytest.fixture
def in_threads(settings: object) -> None:
    settings.ARENA_TASKS = "thread"  # type: ignore[attr-defined]


@pytest.fixture
def dying(monkeypatch: pytest.MonkeyPatch) -> Contender:
    monkeypatch.setitem(engines._engines, "dying", DyingEngine(after=3))
    return Contender.objects.create(
        name="dying", engine="dying", params={"max_tokens": 40, "temperature": 0}
    )


async def test_a_side_that_fails_mid_stream_shows_its_error_and_the_other_finishes(
    alpha: Contender, dying: Contender, alice: str, in_threads: None
) -> None:
    client = Client(alice)
    await client.connect()
    await client.start(mode="named", contender_a="alpha", contender_b="dying")
    await client.send({"type": "message.send", "text": "Tell me about the moon."})
    events = await client.answers_finished()
    assert [e["side"] for e in of_type(events, "gen.done")] == ["a"]
    (error,) = of_type(events, "gen.error")
    assert error["side"] == "b" and error["code"] == "engine_failed"
    assert of_type(events, "gen.delta")
    failed = await sync_to_async(Answer.objects.get)(side="b")
    assert failed.status == "error" and failed.error_code == "engine_failed"
    assert failed.text  # the text that did arrive is kept
    assert (await client.error({"type": "vote", "choice": "a"}))["code"] == "failed_turn"
    await client.close()


async def test_deltas_are_coalesced_by_time_not_sent_per_token(
    alpha: Contender, beta: Contender, alice: str, in_threads: None, settings: object
) -> None:
    settings.ARENA_DELTA_INTERVAL_MS = 500.0  # type: ignore[attr-defined]
    await sync_to_async(Contender.objects.update)(params={"max_tokens": 30, "temperature": 0})
    client = Client(alice)
    await client.connect()
    await client.start()
    await client.send({"type": "message.send", "text": "List five fruits."})
    events = await client.answers_finished()
    for done in of_type(events, "gen.done"):
        deltas = [e for e in of_type(events, "gen.delta") if e["side"] == done["side"]]
        assert "".join(d["text"] for d in deltas) == done["text"]
        assert [d["offset"] for d in deltas] == [
            sum(len(x["text"]) for x in deltas[:i]) for i in range(len(deltas))
        ]
        # ~13 tokens/s for 30 tokens in 0.5 s windows: a handful of deltas.
        assert len(deltas) < done["stats"]["tokens"] / 2
    await client.close()


async def test_an_unknown_engine_fails_that_side_cleanly(
    alpha: Contender, alice: str, in_threads: None
) -> None:
    await sync_to_async(Contender.objects.create)(name="ghost", engine="nonexistent")
    client = Client(alice)
    await client.connect()
    await client.start(mode="named", contender_a="alpha", contender_b="ghost")
    await client.send({"type": "message.send", "text": "Hello?"})
    events = await client.answers_finished()
    (error,) = of_type(events, "gen.error")
    assert error["side"] == "b" and error["code"] == "engine_unknown"
    await client.close()
