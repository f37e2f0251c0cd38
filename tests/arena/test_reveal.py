"""Nothing identifies a contender before the reveal, and no character the
database refuses stops an answer (issue 14, items 2 and 7).

Through the real ASGI application and the real model, on whatever the
settings say (the embedded default, or PostgreSQL, Redis and a Celery worker).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.utils import timezone

from arena import services
from arena.events import ANSWER_ERRORS
from arena.models import Answer, Battle, Turn
from arena.selectors import battle_state
from inference.models import Contender
from tests.arena.wsclient import Client

pytestmark = [pytest.mark.django_db(transaction=True)]

# What would fingerprint a contender's system prompt, template or server.
REVEALING = ("prompt_tokens", "ttft_ms", "duration_ms", "tokens_per_s")
Frame = tuple[str, dict[str, Any]]


async def _frames(client: Client, done: Callable[[dict[str, Any]], bool]) -> list[Frame]:
    """Raw frames (and their events) up to and including the first `done` one."""
    got: list[Frame] = []
    deadline = time.monotonic() + 120
    while True:
        raw = await client.comm.receive_from(timeout=max(deadline - time.monotonic(), 0.1))
        event = json.loads(raw)
        got.append((raw, event))
        if done(event):
            return got


def _ended(n: int = 2) -> Callable[[dict[str, Any]], bool]:
    ended = 0

    def done(event: dict[str, Any]) -> bool:
        nonlocal ended
        ended += event["type"] in ("gen.done", "gen.error")
        return ended >= n

    return done


def _of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["type"] == kind


def _assert_unrevealing(frames: list[Frame]) -> None:
    for raw, event in frames:
        leaked = [key for key in REVEALING if key in raw]
        assert leaked == [], f"{event['type']} carries {leaked} before the reveal: {raw[:300]}"


def _answer_stats(state: dict[str, Any]) -> dict[tuple[int, str], dict[str, Any]]:
    return {
        (turn["index"], side): turn[side]["stats"]
        for turn in state["turns"]
        for side in ("a", "b")
        if turn[side]
    }


@pytest.mark.model
async def test_before_the_vote_no_frame_carries_prompt_tokens_or_timings_and_the_vote_reveals_them(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice)
    assert await client.connect()
    await client.send({"type": "battle.start"})
    seen = await _frames(client, _of_type("battle.state"))
    battle_id = seen[-1][1]["battle"]["id"]
    for text in ("Say hello.", "And goodbye?"):
        await client.send({"type": "message.send", "text": text})
        seen += await _frames(client, _ended())
    await client.send({"type": "battle.resume", "battle": battle_id})  # a resync: saved stats
    seen += await _frames(client, _of_type("battle.state"))
    _assert_unrevealing(seen)
    done = [event for _, event in seen if event["type"] == "gen.done"]
    assert len(done) == 4
    assert all(set(e["stats"]) == {"tokens", "finish_reason"} for e in done)
    assert all(e["stats"]["tokens"] > 0 for e in done)
    before = seen[-1][1]
    assert all(set(s) == {"tokens", "finish_reason"} for s in _answer_stats(before).values())

    await client.send({"type": "vote", "choice": "a"})
    (raw, recorded), *_ = await _frames(client, _of_type("vote.recorded"))
    assert all(key in raw for key in REVEALING)
    revealed = {(s["turn"], s["side"]): s["stats"] for s in recorded["stats"]}
    assert set(revealed) == {(0, "a"), (0, "b"), (1, "a"), (1, "b")}
    for stats in revealed.values():
        assert stats["prompt_tokens"] > 0 and stats["ttft_ms"] > 0 and stats["duration_ms"] > 0
    after = (await _frames(client, _of_type("battle.state")))[-1][1]
    assert after["battle"]["status"] == "voted"
    assert _answer_stats(after) == revealed
    # Each side's second prompt holds its first exchange: more prompt tokens.
    for side in ("a", "b"):
        assert revealed[(1, side)]["prompt_tokens"] > revealed[(0, side)]["prompt_tokens"]
    await client.close()


@pytest.mark.model
async def test_a_named_battle_is_revealed_so_its_state_carries_the_stats_but_gen_done_never_does(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice)
    await client.connect()
    state = await client.start(mode="named", contender_a="beta", contender_b="alpha")
    await client.send({"type": "message.send", "text": "Name a fruit."})
    frames = await _frames(client, _ended())
    done = [event for _, event in frames if event["type"] == "gen.done"]
    assert [set(e["stats"]) for e in done] == [{"tokens", "finish_reason"}] * 2
    await client.send({"type": "battle.resume", "battle": state["battle"]["id"]})
    resumed = (await _frames(client, _of_type("battle.state")))[-1][1]
    for stats in _answer_stats(resumed).values():
        assert set(REVEALING) <= set(stats)
        assert stats["ttft_ms"] > 0
    await client.close()


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "message.send", "text": "hello\\u0000world"}',
        '{"type": "message.send", "text": "hello \\ud800"}',
        '{"type": "message.send", "text": "\\udc00 hello"}',
    ],
)
async def test_a_nul_or_a_lone_surrogate_in_a_message_is_refused_and_nothing_is_saved(
    contenders: object, alice: str, frame: str
) -> None:
    client = Client(alice)
    await client.connect()
    await client.start()
    error = await client.error(frame)
    assert error["code"] == "bad_field"
    assert await sync_to_async(Turn.objects.count)() == 0
    assert await sync_to_async(Answer.objects.count)() == 0
    # The socket goes on.
    await client.send({"type": "battle.start"})
    assert (await client.next())["type"] == "battle.state"
    await client.close()


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "battle.start", "mode": "named", "contender_a": "alpha\\u0000", '
        '"contender_b": "beta"}',
        '{"type": "battle.start", "mode": "named", "contender_a": "alpha", '
        '"contender_b": "\\ud800beta"}',
        '{"type": "battle.resume", "battle": "\\u0000"}',
        '{"type": "battle.resume", "battle": "\\udfff"}',
    ],
)
async def test_a_nul_or_a_lone_surrogate_in_a_name_or_an_id_is_a_bad_field(
    contenders: object, alice: str, frame: str
) -> None:
    client = Client(alice)
    await client.connect()
    assert (await client.error(frame))["code"] == "bad_field"
    assert await sync_to_async(Battle.objects.count)() == 0
    await client.close()


# --- saving what the database refuses ----------------------------------------


def _streaming(alice: str, n: int) -> list[Answer]:
    """n answers claimed by a worker, with an old heartbeat and some text."""
    claimed = []
    for _ in range(n):
        battle = services.battle_create(session_key=alice)
        answer, _ = services.turn_create(battle_id=battle.pk, session_key=alice, text="hi")
        assert services.answer_start(answer_id=answer.pk) is not None
        claimed.append(answer)
    long_ago = timezone.now() - timedelta(minutes=5)
    Answer.objects.filter(pk__in=[a.pk for a in claimed]).update(
        text="before", heartbeat_at=long_ago
    )
    return claimed


def _refused(text: str) -> bool:
    """Whether this database refuses the text (SQLite stores a NUL)."""
    return "\x00" not in text or connection.vendor == "postgresql"


BAD_TEXTS = ["partial \x00 text", "partial \ud800 text"]


@pytest.mark.parametrize("bad", BAD_TEXTS)
def test_progress_with_one_text_the_database_refuses_still_beats_every_heartbeat(
    contenders: object, alice: str, bad: str
) -> None:
    first, poisoned, last = _streaming(alice, 3)
    started = timezone.now()
    updated = services.answers_progress(texts={first.pk: "one", poisoned.pk: bad, last.pk: None})
    assert updated == 3
    rows = {a.pk: a for a in Answer.objects.all()}
    assert all(rows[a.pk].heartbeat_at >= started for a in (first, poisoned, last))  # type: ignore[operator]
    assert (rows[first.pk].text, rows[last.pk].text) == ("one", "before")
    assert rows[poisoned.pk].text == ("before" if _refused(bad) else bad)
    assert all(rows[a.pk].status == Answer.Status.STREAMING for a in (first, poisoned, last))
    # The reaper finds nothing to fail.
    assert services.answers_reap(stale_after=60, pending_after=3600) == []


@pytest.mark.parametrize("bad", BAD_TEXTS)
def test_an_outcome_the_database_refuses_fails_that_answer_cleanly(
    contenders: object, alice: str, bad: str
) -> None:
    (answer,) = _streaming(alice, 1)
    outcome = services.AnswerOutcome(
        status=Answer.Status.DONE, text=bad, finish_reason="stop", tokens=3, ttft_ms=5.0
    )
    saved = services.answer_complete(answer_id=answer.pk, outcome=outcome)
    answer.refresh_from_db()
    if not _refused(bad):
        assert saved == outcome and answer.status == Answer.Status.DONE
        return
    assert saved is not None
    assert (saved.status, saved.error_code, saved.text) == (Answer.Status.ERROR, "bad_output", "")
    assert (answer.status, answer.error_code, answer.text) == ("error", "bad_output", "")
    assert answer.finished_at is not None and answer.tokens == 3
    assert "could not be saved" in answer.error_message  # the detail, for the admin
    state = battle_state(battle_id=answer.turn.battle_id)
    assert state["turns"][0]["a"]["error"] == {  # type: ignore[index]
        "code": "bad_output",
        "message": ANSWER_ERRORS["bad_output"],
    }
    # Once: a late outcome for the failed answer is dropped.
    assert services.answer_complete(answer_id=answer.pk, outcome=outcome) is None


def test_an_answer_error_in_the_state_is_the_codes_fixed_message_never_the_detail(
    contenders: list[Contender], alice: str
) -> None:
    (answer,) = _streaming(alice, 1)
    detail = "The model server 'gpu-7' could not be reached: http://10.0.0.7:8000 (ARENA_KEY_X)"
    services.answer_complete(
        answer_id=answer.pk,
        outcome=services.AnswerOutcome(
            status=Answer.Status.ERROR,
            text="",
            finish_reason="error",
            error_code="engine_unreachable",
            error_message=detail,
        ),
    )
    state = battle_state(battle_id=answer.turn.battle_id)
    raw = json.dumps(state)
    assert "gpu-7" not in raw and "10.0.0.7" not in raw and "ARENA_KEY_X" not in raw
    assert state["turns"][0]["a"]["error"] == {  # type: ignore[index]
        "code": "engine_unreachable",
        "message": ANSWER_ERRORS["engine_unreachable"],
    }
    assert Answer.objects.get(pk=answer.pk).error_message == detail
