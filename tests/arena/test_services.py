"""Services and selectors as plain functions, on the test database."""

from __future__ import annotations

import random

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from arena import services
from arena.events import ArenaError
from arena.models import Answer, Battle, Turn, Vote
from arena.selectors import battle_state
from inference.jobs import answer_claim
from inference.models import Contender, Endpoint, Engine
from inference.tokens import bytes_bound, local_count

pytestmark = pytest.mark.django_db


def _finish(answers: list[Answer], status: str = Answer.Status.DONE, text: str = "ok") -> None:
    for answer in answers:
        Answer.objects.filter(pk=answer.pk).update(status=status, text=text)


def test_battle_create_picks_two_distinct_enabled_contenders(
    contenders: list[Contender], alice: str
) -> None:
    Contender.objects.create(name="off", enabled=False)
    Contender.objects.create(name="imported", engine=Engine.NONE)
    for seed in range(20):
        battle = services.battle_create(session_key=alice, rng=random.Random(seed))
        assert {battle.contender_a.name, battle.contender_b.name} == {"alpha", "beta"}
    sides = {
        services.battle_create(session_key=alice, rng=random.Random(s)).contender_a.name
        for s in range(20)
    }
    assert sides == {"alpha", "beta"}


def test_battle_create_without_two_contenders_is_a_clear_error(
    alpha: Contender, alice: str
) -> None:
    with pytest.raises(ArenaError) as caught:
        services.battle_create(session_key=alice)
    assert caught.value.code == "no_contenders"


def test_named_mode_refuses_the_same_contender_twice(contenders: object, alice: str) -> None:
    with pytest.raises(ArenaError) as caught:
        services.battle_create(
            session_key=alice, mode="named", contender_a="alpha", contender_b="alpha"
        )
    assert caught.value.code == "bad_contender"


def test_a_turn_gives_each_side_its_contenders_system_prompt_and_params(
    contenders: object, alice: str
) -> None:
    battle = services.battle_create(
        session_key=alice, mode="named", contender_a="alpha", contender_b="beta"
    )
    a, b = services.turn_create(battle_id=battle.pk, session_key=alice, text="  Hello  ")
    assert a.messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello"},
    ]
    assert b.messages == [{"role": "user", "content": "Hello"}]
    assert a.params["max_tokens"] == 6 and a.params["temperature"] == 0.0


def test_a_new_message_waits_for_both_answers(contenders: object, alice: str) -> None:
    battle = services.battle_create(session_key=alice)
    services.turn_create(battle_id=battle.pk, session_key=alice, text="one")
    with pytest.raises(ArenaError) as caught:
        services.turn_create(battle_id=battle.pk, session_key=alice, text="two")
    assert caught.value.code == "busy"


def test_a_vote_is_refused_on_a_failed_turn_until_it_is_regenerated(
    contenders: object, alice: str
) -> None:
    battle = services.battle_create(session_key=alice)
    a, b = services.turn_create(battle_id=battle.pk, session_key=alice, text="hi")
    _finish([a])
    _finish([b], status=Answer.Status.ERROR)
    with pytest.raises(ArenaError) as caught:
        services.vote_record(battle_id=battle.pk, session_key=alice, choice="a")
    assert caught.value.code == "failed_turn"
    state = battle_state(battle_id=battle.pk)
    assert state["battle"]["can_vote"] is False
    new = services.turn_regenerate(battle_id=battle.pk, session_key=alice)
    _finish(new)
    vote = services.vote_record(battle_id=battle.pk, session_key=alice, choice="a")
    assert vote.turn_id == a.turn_id
    assert Answer.objects.filter(superseded=True).count() == 2


def test_a_vote_closes_the_battle_and_reveals_the_names(contenders: object, alice: str) -> None:
    battle = services.battle_create(session_key=alice)
    assert battle_state(battle_id=battle.pk)["battle"]["models"] is None
    _finish(services.turn_create(battle_id=battle.pk, session_key=alice, text="hi"))
    services.vote_record(battle_id=battle.pk, session_key=alice, choice="tie")
    state = battle_state(battle_id=battle.pk)
    assert state["battle"]["status"] == "voted"
    assert state["battle"]["vote"] == "tie"
    assert set(state["battle"]["models"].values()) == {"alpha", "beta"}  # type: ignore[union-attr]
    with pytest.raises(ArenaError) as caught:
        services.turn_create(battle_id=battle.pk, session_key=alice, text="more")
    assert caught.value.code == "already_voted"


def test_only_the_owner_may_act(contenders: object, alice: str, mallory: str) -> None:
    battle = services.battle_create(session_key=alice)
    for call in (
        lambda: services.turn_create(battle_id=battle.pk, session_key=mallory, text="hi"),
        lambda: services.vote_record(battle_id=battle.pk, session_key=mallory, choice="a"),
        lambda: services.turn_regenerate(battle_id=battle.pk, session_key=mallory),
        lambda: services.answers_unfinished(battle_id=battle.pk, session_key=mallory),
    ):
        with pytest.raises(ArenaError) as caught:
            call()
        assert caught.value.code == "forbidden"


def test_the_database_refuses_a_second_vote_on_a_battle(contenders: object, alice: str) -> None:
    battle = services.battle_create(session_key=alice)
    _finish(services.turn_create(battle_id=battle.pk, session_key=alice, text="hi"))
    vote = services.vote_record(battle_id=battle.pk, session_key=alice, choice="a")
    with pytest.raises(IntegrityError), transaction.atomic():
        Vote.objects.create(
            battle=battle,
            turn=vote.turn,
            contender_a=battle.contender_a,
            contender_b=battle.contender_b,
            choice="b",
            anonymous=True,
            created_at=timezone.now(),
        )


def test_the_database_keeps_one_current_answer_per_side(contenders: object, alice: str) -> None:
    battle = services.battle_create(session_key=alice)
    a, _ = services.turn_create(battle_id=battle.pk, session_key=alice, text="hi")
    with pytest.raises(IntegrityError), transaction.atomic():
        Answer.objects.create(
            turn=a.turn, side="a", attempt=5, contender=a.contender, messages=[], params={}
        )


def test_stop_marks_unclaimed_answers_stopped(contenders: object, alice: str) -> None:
    battle = services.battle_create(session_key=alice)
    a, b = services.turn_create(battle_id=battle.pk, session_key=alice, text="hi")
    ids = services.answers_unfinished(battle_id=battle.pk, session_key=alice)
    assert sorted(ids) == sorted([a.pk, b.pk])
    assert set(Answer.objects.values_list("status", flat=True)) == {"stopped"}
    assert services.answer_start(answer_id=a.pk) is None
    with pytest.raises(ArenaError) as caught:
        services.answers_unfinished(battle_id=battle.pk, session_key=alice)
    assert caught.value.code == "nothing_to_do"


def test_an_answer_is_claimed_once(contenders: object, alice: str) -> None:
    battle = services.battle_create(session_key=alice)
    a, _ = services.turn_create(battle_id=battle.pk, session_key=alice, text="hi")
    job = answer_claim(answer_id=a.pk)
    assert job is not None and job.request.max_tokens == 6
    assert job.request.messages[-1] == {"role": "user", "content": "hi"}
    assert services.answer_start(answer_id=a.pk) is None
    assert Battle.objects.get().status == "open"


def test_progress_of_many_answers_is_saved_in_one_statement(
    contenders: object, alice: str, django_assert_num_queries: object
) -> None:
    claimed = []
    for _ in range(3):
        battle = services.battle_create(session_key=alice)
        a, b = services.turn_create(battle_id=battle.pk, session_key=alice, text="hi")
        assert services.answer_start(answer_id=a.pk) is not None
        claimed.append(a)
    # b of the last battle is still pending: no heartbeat, no text for it.
    Answer.objects.filter(pk=claimed[0].pk).update(text="kept", heartbeat_at=None)
    with django_assert_num_queries(1):  # type: ignore[operator]
        updated = services.answers_progress(
            texts={claimed[0].pk: None, claimed[1].pk: "two", claimed[2].pk: "three", b.pk: "x"}
        )
    assert updated == 3
    rows = {a.pk: a for a in Answer.objects.filter(pk__in=[*(a.pk for a in claimed), b.pk])}
    assert [rows[a.pk].text for a in claimed] == ["kept", "two", "three"]
    assert all(rows[a.pk].heartbeat_at is not None for a in claimed)
    assert rows[b.pk].text == "" and rows[b.pk].status == Answer.Status.PENDING
    assert services.answers_progress(texts={}) == 0


def test_the_state_sent_with_a_turn_is_the_state_read_back(contenders: object, alice: str) -> None:
    battle = services.battle_create(session_key=alice)
    answers, state = services.turn_send(battle_id=battle.pk, session_key=alice, text="hi")
    assert state == battle_state(battle_id=battle.pk)
    assert [t["a"]["status"] for t in state["turns"]] == ["pending"]  # type: ignore[index]
    for answer, text in zip(answers, ("one", "two"), strict=True):
        done = services.AnswerOutcome(status=Answer.Status.DONE, text=text, tokens=1)
        assert services.answer_complete(answer_id=answer.pk, outcome=done)
    _, state = services.turn_send(battle_id=battle.pk, session_key=alice, text="more")
    assert state == battle_state(battle_id=battle.pk)
    assert [t["user"] for t in state["turns"]] == ["hi", "more"]
    assert state["turns"][0]["b"]["html"]  # type: ignore[index]
    assert state["battle"]["can_send"] is False and state["battle"]["can_vote"] is False


# --- prompts measured in tokens (issue 14) ---------------------------------

X = "\U0001d54f"  # 4 UTF-8 bytes, 3 SmolLM2 tokens: 4,000 of them are ~12,000 tokens


def test_a_message_too_long_in_tokens_is_refused_and_leaves_nothing(
    contenders: object, alice: str
) -> None:
    battle = services.battle_create(session_key=alice)
    with pytest.raises(ArenaError) as caught:
        services.turn_send(battle_id=battle.pk, session_key=alice, text=X * 4000)
    assert caught.value.code == "prompt_too_long"
    assert "tokens" in caught.value.message
    assert Turn.objects.count() == 0 and Answer.objects.count() == 0
    # The same number of characters in words fits, and the battle goes on.
    services.turn_send(battle_id=battle.pk, session_key=alice, text="word " * 800)
    assert Turn.objects.count() == 1 and Answer.objects.count() == 2


def test_a_server_contender_is_measured_by_its_utf8_bytes(alice: str) -> None:
    endpoint = Endpoint.objects.create(name="vllm", base_url="http://127.0.0.1:9/v1")
    for name in ("srv-a", "srv-b"):
        Contender.objects.create(
            name=name, engine=Engine.OPENAI, endpoint=endpoint, model="m", context_window=2048
        )
    battle = services.battle_create(session_key=alice)
    # 1,000 characters, 3,000 bytes: over a 2,048-token window for a tokenizer we cannot see.
    with pytest.raises(ArenaError) as caught:
        services.turn_send(battle_id=battle.pk, session_key=alice, text="中" * 1000)
    assert caught.value.code == "prompt_too_long"
    assert Turn.objects.count() == 0
    a, _ = services.turn_create(battle_id=battle.pk, session_key=alice, text="中" * 500)
    assert bytes_bound(a.messages) + int(a.params["max_tokens"]) <= 2048


def test_history_is_trimmed_oldest_first_by_the_real_token_count(
    contenders: list[Contender], alice: str
) -> None:
    Contender.objects.update(context_window=1024)
    battle = services.battle_create(session_key=alice)
    asked = []
    for i in range(4):
        asked.append(f"q{i} {X * 60}")  # ~180 tokens, 61 characters
        answers = services.turn_create(battle_id=battle.pk, session_key=alice, text=asked[-1])
        _finish(answers, text=f"a{i} " + X * 30)
    a, b = services.turn_create(battle_id=battle.pk, session_key=alice, text="latest")
    budget = 1024 - 6  # the window less the answer's max_tokens
    for answer in (a, b):
        users = [m["content"] for m in answer.messages if m["role"] == "user"]
        kept = users[:-1]
        assert users[-1] == "latest"
        assert 0 < len(kept) < 4 and kept == asked[4 - len(kept) :]  # the newest ones
        assert local_count(answer.messages) <= budget
        older = asked[3 - len(kept)]
        head = answer.messages[:1] if answer.messages[0]["role"] == "system" else []
        one_more = [
            *head,
            {"role": "user", "content": older},
            {"role": "assistant", "content": f"a{3 - len(kept)} " + X * 30},
            *answer.messages[len(head) :],
        ]
        assert local_count(one_more) > budget


def test_a_claimed_request_never_exceeds_the_context_window(
    contenders: list[Contender], alice: str
) -> None:
    battle = services.battle_create(session_key=alice)
    a, _ = services.turn_create(battle_id=battle.pk, session_key=alice, text=X * 1000)
    assert answer_claim(answer_id=a.pk).request.max_tokens == 6  # type: ignore[union-attr]
    # An admin shrinks the window while a regenerated answer waits.
    Answer.objects.filter(turn__battle=battle).update(status=Answer.Status.DONE, text="ok")
    a2, _ = services.turn_regenerate(battle_id=battle.pk, session_key=alice)
    prompt = local_count(a2.messages)
    Contender.objects.filter(pk=a2.contender_id).update(context_window=prompt + 3)
    job = answer_claim(answer_id=a2.pk)
    assert job is not None
    assert job.request.max_tokens == 3
    assert local_count(job.request.messages) + job.request.max_tokens == prompt + 3
