"""RAG answers beyond the battle: their passages in the preference exports and
their triad beside the score on the leaderboard."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.test import Client

from arena import services
from arena.models import Battle
from inference.models import Contender, RagScore
from inference.rag.prompting import messages_with_passages
from ratings.exports import ExportFilter, preferences_export
from ratings.preference import Options

pytestmark = pytest.mark.django_db

PASSAGE = {
    "chunk": 7,
    "document": "Zorblax lantern festival",
    "source": "zorblax.md",
    "section": "Zorblax lantern festival",
    "text": "The festival is held on the second Saturday of April.",
    "score": 0.0328,
    "similarity": 0.71,
}


@pytest.fixture
def alpha_docs(alpha: Contender) -> Contender:
    from inference.models import KnowledgeBase

    kb = KnowledgeBase.objects.create(name="quentville")
    return Contender.objects.create(name="alpha-docs", params=alpha.params, knowledge_base=kb)


def _rag_battle(key: str, choice: str, scores: tuple[float, float, float]) -> Battle:
    """alpha (a) against alpha-docs (b), answered as the worker does, voted."""
    battle = services.battle_create(
        session_key=key, mode="named", contender_a="alpha", contender_b="alpha-docs"
    )
    Battle.objects.filter(pk=battle.pk).update(mode="anonymous")
    a, b = services.turn_create(battle_id=battle.pk, session_key=key, text="When is it?")
    services.answer_passages_save(
        answer_id=b.pk,
        passages=[PASSAGE],
        messages=messages_with_passages(
            b.messages, passages=[PASSAGE], template="", knowledge_base="quentville"
        ),
    )
    for answer, text in ((a, "In May."), (b, "On the second Saturday of April [1].")):
        assert services.answer_start(answer_id=answer.pk) is not None
        services.answer_complete(
            answer_id=answer.pk,
            outcome=services.AnswerOutcome(status="done", text=text, tokens=5),
        )
    RagScore.objects.create(
        answer=b,
        contender=b.contender,
        context_relevance=scores[0],
        groundedness=scores[1],
        answer_relevance=scores[2],
    )
    services.vote_record(battle_id=battle.pk, session_key=key, choice=choice)
    return battle


@pytest.fixture
def rag_votes(alpha: Contender, alpha_docs: Contender, alice: str, mallory: str) -> None:
    _rag_battle(alice, "b", (0.6, 1.0, 0.8))
    _rag_battle(mallory, "a", (0.4, 0.5, 0.6))


def test_the_arena_export_carries_each_sides_passages(rag_votes: None, tmp_path: Path) -> None:
    path = tmp_path / "arena.jsonl"
    preferences_export(fmt="arena", path=path, export_filter=ExportFilter(), options=Options())
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["passages_a"] == []
        assert record["passages_b"] == [
            {k: v for k, v in PASSAGE.items() if k not in ("chunk", "similarity")} | {"turn": 0}
        ]

    parquet = tmp_path / "arena.parquet"
    preferences_export(fmt="arena", path=parquet, export_filter=ExportFilter(), options=Options())
    rows = pq.read_table(parquet).to_pylist()
    assert rows[0]["passages_b"][0]["text"] == PASSAGE["text"]
    assert rows[0]["passages_a"] == []


def test_the_rag_context_reaches_a_dpo_prompt_through_the_system_prompt(
    rag_votes: None, tmp_path: Path
) -> None:
    path = tmp_path / "trl.jsonl"
    preferences_export(
        fmt="trl", path=path, export_filter=ExportFilter(), options=Options(system_prompt=True)
    )
    records = [json.loads(line) for line in path.read_text().splitlines()]
    rag_won = next(r for r in records if "April" in r["chosen"][0]["content"])
    assert rag_won["prompt"][0]["role"] == "system"
    assert PASSAGE["text"] in rag_won["prompt"][0]["content"]


def test_the_leaderboard_shows_the_triad_of_rag_contenders(rag_votes: None, client: Client) -> None:
    page = client.get("/leaderboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Grounded" in html and "Context rel." in html
    assert "0.75" in html  # alpha-docs' mean groundedness, (1.0 + 0.5) / 2

    rows = {r["name"]: r for r in client.get("/leaderboard/leaderboard.json").json()["rows"]}
    assert rows["alpha"]["rag"] is None
    rag = rows["alpha-docs"]["rag"]
    assert rag["answers"] == 2 and rag["judged"] == 0
    assert (rag["context_relevance"], rag["groundedness"], rag["answer_relevance"]) == (
        0.5,
        0.75,
        0.7,
    )

    table = list(csv.DictReader(io.StringIO(client.get("/leaderboard/leaderboard.csv").text)))
    by_name = {r["name"]: r for r in table}
    assert by_name["alpha-docs"]["rag_groundedness"] == "0.75"
    assert by_name["alpha"]["rag_groundedness"] == ""


def test_the_contender_page_shows_its_rag_quality(rag_votes: None, client: Client) -> None:
    page = client.get("/leaderboard/contender/alpha-docs/").content.decode()
    assert "RAG quality" in page and "over 2 answers" in page and "0.75" in page
    assert "RAG quality" not in client.get("/leaderboard/contender/alpha/").content.decode()


def test_a_board_without_rag_contenders_has_no_triad_columns(
    alpha: Contender, beta: Contender, alice: str, client: Client
) -> None:
    battle = services.battle_create(
        session_key=alice, mode="named", contender_a="alpha", contender_b="beta"
    )
    for answer in services.turn_create(battle_id=battle.pk, session_key=alice, text="Hi"):
        services.answer_start(answer_id=answer.pk)
        services.answer_complete(
            answer_id=answer.pk, outcome=services.AnswerOutcome(status="done", text="Hello")
        )
    services.vote_record(battle_id=battle.pk, session_key=alice, choice="a")
    assert "Grounded" not in client.get("/leaderboard/").content.decode()
