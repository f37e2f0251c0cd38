"""The battle websocket through the real ASGI application.

Runs on whatever the settings say: the embedded default (SQLite, in-memory
layer, generation threads) or the real services (PostgreSQL, the Redis layer,
a Celery worker process); `.ci/run` runs both. The model is the real SmolLM2.
"""

from __future__ import annotations

from typing import Any

import kombu.exceptions
import pytest
from asgiref.sync import sync_to_async

from arena.models import Answer, Battle, Turn, Vote
from inference.models import Contender
from tests.arena.wsclient import Client, of_type

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]


async def test_a_visitor_battles_votes_and_only_then_sees_the_names(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice)
    assert await client.connect()
    state = await client.start()
    assert state["type"] == "battle.state"
    assert state["battle"]["models"] is None
    assert state["battle"]["can_vote"] is False

    await client.send({"type": "message.send", "text": "Say hello."})
    events = await client.answers_finished()
    assert events[0]["type"] == "battle.state"
    done = of_type(events, "gen.done")
    assert {e["side"] for e in done} == {"a", "b"}
    for side in ("a", "b"):
        deltas = [e for e in of_type(events, "gen.delta") if e["side"] == side]
        assert deltas, f"side {side} streamed nothing"
        assert [d["seq"] for d in deltas] == list(range(len(deltas)))
        final = next(e for e in done if e["side"] == side)
        assert "".join(d["text"] for d in deltas) == final["text"]
        assert final["stats"]["tokens"] > 0
        assert set(final["stats"]) == {"tokens", "finish_reason"}  # timings wait for the vote
    assert all("models" not in e or e["models"] is None for e in events if e["type"] != "gen.done")

    await client.send({"type": "vote", "choice": "a"})
    recorded = (await client.until(lambda e: e["type"] == "vote.recorded"))[-1]
    assert set(recorded["models"].values()) == {"alpha", "beta"}
    assert {(s["turn"], s["side"]) for s in recorded["stats"]} == {(0, "a"), (0, "b")}
    assert all(s["stats"]["ttft_ms"] > 0 for s in recorded["stats"])
    state = (await client.until(lambda e: e["type"] == "battle.state"))[-1]
    assert state["battle"]["status"] == "voted"
    assert state["battle"]["models"] == recorded["models"]
    vote = await sync_to_async(Vote.objects.get)()
    assert vote.choice == "a" and vote.anonymous
    await client.close()


async def test_each_side_keeps_its_own_history_across_turns(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice)
    await client.connect()
    await client.start()
    await client.send({"type": "message.send", "text": "Name a colour."})
    first = of_type(await client.answers_finished(), "gen.done")
    await client.send({"type": "message.send", "text": "And another one?"})
    await client.answers_finished()

    answers = await sync_to_async(
        lambda: list(
            Answer.objects.filter(turn__index=1).select_related("contender").order_by("side")
        )
    )()
    for answer in answers:
        earlier = next(e["text"] for e in first if e["side"] == answer.side)
        roles = [m["role"] for m in answer.messages]
        assert roles[-3:] == ["user", "assistant", "user"]
        assert answer.messages[-2]["content"] == earlier
        assert answer.messages[-1]["content"] == "And another one?"
        has_system = bool(answer.contender.system_prompt)
        assert (roles[0] == "system") == has_system
    await client.close()


async def test_a_reconnect_resyncs_the_whole_battle(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice)
    await client.connect()
    battle_id = (await client.start())["battle"]["id"]
    await client.send({"type": "message.send", "text": "Hi!"})
    done = of_type(await client.answers_finished(), "gen.done")
    await client.close()

    again = Client(alice)
    await again.connect()
    await again.send({"type": "battle.resume", "battle": battle_id})
    state = await again.next()
    assert state["type"] == "battle.state"
    assert state["battle"]["can_vote"] is True
    turn = state["turns"][0]
    assert turn["user"] == "Hi!"
    for event in done:
        assert turn[event["side"]]["text"] == event["text"]
        assert turn[event["side"]]["html"] == event["html"]
    await again.close()


async def test_regenerate_keeps_the_old_answers_as_superseded(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice)
    await client.connect()
    await client.start()
    await client.send({"type": "message.send", "text": "Tell me a fact."})
    await client.answers_finished()
    await client.send({"type": "regenerate"})
    events = await client.answers_finished()
    assert {e["attempt"] for e in of_type(events, "gen.done")} == {1}
    rows = await sync_to_async(
        lambda: list(Answer.objects.values_list("side", "attempt", "superseded"))
    )()
    assert sorted(rows) == [("a", 0, True), ("a", 1, False), ("b", 0, True), ("b", 1, False)]
    await client.send({"type": "vote", "choice": "tie"})
    await client.until(lambda e: e["type"] == "vote.recorded")
    await client.close()


async def test_stop_ends_both_streams_early(
    alpha: object, beta: object, alice: str, generation: None
) -> None:
    await sync_to_async(Contender.objects.update)(params={"max_tokens": 200, "temperature": 0.0})
    client = Client(alice)
    await client.connect()
    await client.start()
    await client.send({"type": "message.send", "text": "Write a long story about a dragon."})
    # Both sides have text once each has sent a delta: stopped answers with
    # text stay votable (one stopped before its first token would not).
    sides: set[str] = set()

    def both_sides_have_text(event: dict[str, object]) -> bool:
        if event["type"] == "gen.delta":
            sides.add(str(event["side"]))
        return len(sides) == 2

    await client.until(both_sides_have_text)
    await client.send({"type": "stop"})
    events = await client.answers_finished()
    done = of_type(events, "gen.done")
    assert {e["stats"]["finish_reason"] for e in done} == {"stopped"}
    assert all(e["stats"]["tokens"] < 200 for e in done)
    statuses = await sync_to_async(lambda: list(Answer.objects.values_list("status", flat=True)))()
    assert set(statuses) == {Answer.Status.STOPPED}
    await client.send({"type": "vote", "choice": "b"})
    assert (await client.until(lambda e: e["type"] in ("vote.recorded", "error")))[-1][
        "type"
    ] == "vote.recorded"
    await client.close()


async def test_named_mode_uses_the_visitors_pick_and_flags_the_vote(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice)
    await client.connect()
    state = await client.start(mode="named", contender_a="beta", contender_b="alpha")
    assert state["battle"]["models"] == {"a": "beta", "b": "alpha"}
    await client.send({"type": "message.send", "text": "Hello"})
    await client.answers_finished()
    await client.send({"type": "vote", "choice": "both_bad"})
    await client.until(lambda e: e["type"] == "vote.recorded")
    vote = await sync_to_async(Vote.objects.get)()
    assert vote.anonymous is False and vote.choice == "both_bad"
    await client.close()


# --- bad input: a clear error, nothing lost ---------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('{"type": "launch.missiles"}', "unknown_type"),
        ('{"type": "message.send"}', "bad_field"),
        ('{"type": "message.send", "text": 42}', "bad_field"),
        ('{"type": "battle.resume", "battle": "not-a-uuid"}', "no_battle"),
        ('{"type": "vote", "choice": "c"}', "invalid_choice"),
        ('{"type": "battle.start", "mode": "named", "contender_a": "alpha"}', "bad_field"),
        ('{"type": "message.send", "text": "' + "x" * 70_000 + '"}', "too_large"),
    ],
)
async def test_malformed_events_get_a_clear_error_and_the_socket_stays_open(
    contenders: object, alice: str, frame: str, code: str
) -> None:
    client = Client(alice)
    await client.connect()
    await client.start()
    error = await client.error(frame)
    assert error["code"] == code
    assert error["message"]
    # Still usable afterwards.
    await client.send({"type": "battle.start"})
    assert (await client.next())["type"] == "battle.state"
    await client.close()


async def test_prompt_limits_are_enforced(contenders: object, alice: str, settings: object) -> None:
    client = Client(alice)
    await client.connect()
    await client.start()
    assert (await client.error({"type": "message.send", "text": "   "}))["code"] == "empty_prompt"
    long = "x" * 4001
    assert (await client.error({"type": "message.send", "text": long}))["code"] == "prompt_too_long"
    assert await sync_to_async(Answer.objects.count)() == 0
    await client.close()


async def test_a_multibyte_prompt_over_the_context_is_refused_before_anything_is_queued(
    contenders: object, alice: str, generation: None
) -> None:
    # 4,000 characters pass the character cap, but are ~12,000 SmolLM2 tokens:
    # more than the default 8,192-token window (the 175 s prefill).
    client = Client(alice)
    await client.connect()
    await client.start()
    error = await client.error({"type": "message.send", "text": "\U0001d54f" * 4000})
    assert error["code"] == "prompt_too_long"
    assert "tokens" in error["message"]
    assert await client.quiet(0.5)  # no state, no gen.start: nothing was queued
    assert await sync_to_async(Turn.objects.count)() == 0
    assert await sync_to_async(Answer.objects.count)() == 0
    # The battle is unharmed: an ordinary message goes through.
    await client.send({"type": "message.send", "text": "Say hello."})
    events = await client.answers_finished()
    assert {e["side"] for e in of_type(events, "gen.done")} == {"a", "b"}
    assert await sync_to_async(Turn.objects.count)() == 1
    await client.close()


async def test_too_many_turns_is_refused_and_keeps_the_earlier_turns(
    contenders: object, alice: str, generation: None, settings: object
) -> None:
    settings.ARENA_MAX_TURNS = 1  # type: ignore[attr-defined]
    client = Client(alice)
    await client.connect()
    await client.start()
    await client.send({"type": "message.send", "text": "One"})
    await client.answers_finished()
    error = await client.error({"type": "message.send", "text": "Two"})
    assert error["code"] == "too_many_turns"
    assert await sync_to_async(Answer.objects.filter(status="done").count)() == 2
    await client.close()


async def test_votes_are_refused_before_both_answers_and_after_the_first(
    contenders: object, alice: str, generation: None
) -> None:
    client = Client(alice)
    await client.connect()
    await client.start()
    assert (await client.error({"type": "vote", "choice": "a"}))["code"] == "not_ready"
    await client.send({"type": "message.send", "text": "Hello there"})
    # Answers are pending right after the state arrives: too early to vote.
    await client.until(lambda e: e["type"] == "battle.state")
    await client.send({"type": "vote", "choice": "a"})
    early = await client.until(lambda e: e["type"] == "error" or e["type"] == "vote.recorded")
    assert early[-1]["type"] == "error" and early[-1]["code"] == "not_ready"
    await client.answers_finished(
        n=2 - len([e for e in client.seen if e["type"] in ("gen.done", "gen.error")])
    )
    await client.send({"type": "vote", "choice": "b"})
    await client.until(lambda e: e["type"] == "vote.recorded")
    second = await client.error({"type": "vote", "choice": "a"})
    assert second["code"] == "already_voted"
    vote = await sync_to_async(Vote.objects.get)()
    assert vote.choice == "b"
    assert await sync_to_async(Vote.objects.count)() == 1
    await client.close()


async def test_another_session_cannot_act_on_a_battle(
    contenders: object, alice: str, mallory: str
) -> None:
    owner = Client(alice)
    await owner.connect()
    battle_id = (await owner.start())["battle"]["id"]
    intruder = Client(mallory)
    await intruder.connect()
    error = await intruder.error({"type": "battle.resume", "battle": battle_id})
    assert error["code"] == "forbidden"
    # Without a resumed battle there is nothing to act on.
    assert (await intruder.error({"type": "vote", "choice": "a"}))["code"] == "no_battle"
    assert (await intruder.error({"type": "message.send", "text": "hi"}))["code"] == "no_battle"
    assert await sync_to_async(Battle.objects.filter(status="open").count)() == 1
    await owner.close()
    await intruder.close()


async def test_a_socket_without_a_session_gets_told(contenders: object) -> None:
    client = Client(None)
    assert await client.connect()
    assert (await client.error({"type": "battle.start"}))["code"] == "no_session"
    await client.close()


async def test_a_foreign_origin_is_refused_at_the_handshake(alice: str) -> None:
    client = Client(alice, origin="https://evil.example")
    assert await client.connect() is False


async def test_no_contenders_is_a_clear_error(alice: str) -> None:
    client = Client(alice)
    await client.connect()
    assert (await client.error({"type": "battle.start"}))["code"] == "no_contenders"
    await client.close()


async def test_answers_the_broker_refuses_fail_at_once_with_a_clear_error(
    contenders: object, alice: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.tasks import generate_answer

    settings.ARENA_TASKS = "celery"

    def refused(**kwargs: Any) -> None:
        raise kombu.exceptions.OperationalError("Error 111 connecting to the broker")

    monkeypatch.setattr(generate_answer, "apply_async", refused)
    client = Client(alice)
    await client.connect()
    await client.start()
    await client.send({"type": "message.send", "text": "Say hello."})
    error = (await client.until(lambda e: e["type"] == "error"))[-1]
    assert error["code"] == "unavailable" and error["retry_after"] > 0
    statuses = await sync_to_async(
        lambda: sorted(Answer.objects.values_list("status", "error_code"))
    )()
    assert statuses == [("error", "unavailable")] * 2  # none left for the reaper
    await client.close()
