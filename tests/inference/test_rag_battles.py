"""RAG battles through the real websocket consumer and a real worker (a Celery
worker on the services, generation threads on the embedded default): the
passages are retrieved by the worker, saved with the answer, kept from the
visitor until the vote, revealed with the names, and scored."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from arena.models import Answer, Battle
from inference.models import Contender, Endpoint, Engine, KnowledgeBase, RagScore
from tests.arena.wsclient import Client, of_type
from tests.conftest import TINY, Process
from tests.inference.rag_facts import facts_kb_make
from tests.inference.servers import VLLMStandIn, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]

QUESTION = "When is the Zorblax lantern festival held?"


@pytest.fixture
def facts_kb(db: None) -> KnowledgeBase:
    return facts_kb_make()


@pytest.fixture
def alpha_docs(alpha: Contender, facts_kb: KnowledgeBase) -> Contender:
    return Contender.objects.create(
        name="alpha-docs",
        engine=Engine.LOCAL,
        system_prompt=alpha.system_prompt,
        params=TINY,
        knowledge_base=facts_kb,
        rag_k=1,
    )


@pytest.fixture
def serving(generation: None, http_worker: Process | None) -> Process | None:
    return http_worker


def _answers(battle_id: str) -> dict[str, Answer]:
    answers = Answer.objects.filter(turn__battle_id=battle_id, superseded=False)
    return {a.side: a for a in answers.select_related("turn").order_by("turn__index")}


async def _rag_side(battle_id: str) -> str:
    battle = await Battle.objects.select_related("contender_a").aget(pk=battle_id)
    return "a" if battle.contender_a.name == "alpha-docs" else "b"


async def test_an_anonymous_rag_battle_reveals_its_sources_only_after_the_vote(
    alpha: Contender, alpha_docs: Contender, alice: str, serving: Process | None
) -> None:
    client = Client(alice)
    await client.connect()
    state = await client.start()
    battle_id = state["battle"]["id"]
    await client.send({"type": "message.send", "text": QUESTION})
    events = await client.answers_finished()
    rag = await _rag_side(battle_id)

    # Before the vote nothing tells which side read the knowledge base.
    for event in of_type(events, "gen.done"):
        assert "sources" not in event
    await client.send({"type": "battle.resume", "battle": battle_id})
    resynced = await client.until(lambda e: e["type"] == "battle.state")
    turn = resynced[-1]["turns"][0]
    assert turn["a"]["sources"] is None and turn["b"]["sources"] is None

    answers = await sync_to_async(_answers)(battle_id)
    given = answers[rag].passages
    assert given is not None and len(given) == 1
    assert given[0]["source"] == "zorblax.md"
    assert "second Saturday of April" in answers[rag].messages[0]["content"]
    assert answers[rag].messages[0]["content"].startswith(alpha.system_prompt)
    assert answers["b" if rag == "a" else "a"].passages is None

    await client.send({"type": "vote", "choice": rag})
    reveal = (await client.until(lambda e: e["type"] == "vote.recorded"))[-1]
    assert [(s["turn"], s["side"]) for s in reveal["sources"]] == [(0, rag)]
    assert reveal["sources"][0]["sources"][0]["document"] == "Zorblax lantern festival"
    assert "second Saturday of April" in reveal["sources"][0]["sources"][0]["text"]
    revealed = await client.until(lambda e: e["type"] == "battle.state")
    assert revealed[-1]["turns"][0][rag]["sources"][0]["source"] == "zorblax.md"
    await client.close()

    # Scored after the answer was sent, off the visitor's path.
    answer_id = answers[rag].pk
    assert await sync_to_async(wait_until)(
        lambda: RagScore.objects.filter(answer_id=answer_id).exists(), 60
    )
    score = await RagScore.objects.aget(answer_id=answer_id)
    assert score.contender_id == alpha_docs.pk
    assert 0.3 < score.context_relevance <= 1
    assert 0 <= score.groundedness <= 1 and 0 <= score.answer_relevance <= 1


async def test_a_follow_up_retrieves_with_the_conversation_and_regenerating_keeps_passages(
    alpha: Contender, alpha_docs: Contender, alice: str, serving: Process | None
) -> None:
    client = Client(alice)
    await client.connect()
    state = await client.start(mode="named", contender_a="alpha-docs", contender_b="alpha")
    battle_id = state["battle"]["id"]
    await client.send({"type": "message.send", "text": "Tell me about the Zorblax festival."})
    await client.answers_finished()
    # Alone, this question is as close to the glassworks' canteen as to the festival.
    await client.send({"type": "message.send", "text": "What food is traditional there?"})
    await client.answers_finished()
    first = (await sync_to_async(_answers)(battle_id))["a"]
    assert first.turn.index == 1
    assert first.passages is not None
    assert first.passages[0]["source"] == "zorblax.md"
    assert "smoked eel" in first.passages[0]["text"]

    await client.send({"type": "regenerate"})
    events = await client.answers_finished()
    # Named battles show the sources as they come.
    await client.send({"type": "battle.resume", "battle": battle_id})
    state = (await client.until(lambda e: e["type"] == "battle.state", timeout=10))[-1]
    again = (await sync_to_async(_answers)(battle_id))["a"]
    await client.close()
    assert of_type(events, "gen.done")
    assert again.attempt == first.attempt + 1
    assert again.passages == first.passages
    assert again.messages == first.messages
    assert state["turns"][1]["a"]["sources"][0]["source"] == "zorblax.md"
    assert state["turns"][1]["b"]["sources"] is None


async def test_an_llm_judge_grades_rag_answers(
    alpha_docs: Contender, vllm: VLLMStandIn, alice: str, serving: Process | None
) -> None:
    vllm.behaviour.words = [
        "context_relevance:",
        "8",
        "groundedness:",
        "6",
        "answer_relevance:",
        "9",
    ]
    endpoint = await Endpoint.objects.acreate(name="grader", base_url=vllm.url)
    judge = await Contender.objects.acreate(
        name="grader", engine=Engine.OPENAI, endpoint=endpoint, model=vllm.behaviour.base
    )
    alpha_docs.rag_judge = judge
    await alpha_docs.asave()
    client = Client(alice)
    await client.connect()
    await client.start(mode="named", contender_a="alpha-docs", contender_b="grader")
    await client.send({"type": "message.send", "text": QUESTION})
    await client.answers_finished()
    await client.close()

    def judged() -> bool:
        return RagScore.objects.filter(judge=judge, judge_groundedness__isnull=False).exists()

    assert await sync_to_async(wait_until)(judged, 60)
    score = await RagScore.objects.aget(judge=judge)
    assert (score.judge_context_relevance, score.judge_groundedness) == (0.8, 0.6)
    assert score.judge_answer_relevance == 0.9
    # The judge was shown the question, the passages and the answer.
    graded: list[dict[str, Any]] = [
        r for r in vllm.behaviour.requests if "grade" in r["messages"][0]["content"]
    ]
    assert QUESTION in graded[0]["messages"][1]["content"]
    assert "second Saturday of April" in graded[0]["messages"][1]["content"]


def test_trying_a_rag_contender_in_the_admin_runs_it_with_its_passages(
    alpha_docs: Contender,
) -> None:
    from inference.services import contender_try

    result = contender_try(contender=alpha_docs, prompt=QUESTION)
    assert result.ok, result
    assert [p["source"] for p in result.passages] == ["zorblax.md"]
