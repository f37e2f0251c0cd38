"""A RAG answer's passages are fitted to the contender's context window once
they are retrieved: the room kept for them when the message was sent is an
estimate (three characters a token), and text such as Chinese takes several
times more tokens than that."""

from __future__ import annotations

import pytest

from arena import services
from arena.models import Answer
from inference.jobs import answer_claim
from inference.models import Contender, Engine, KnowledgeBase
from inference.rag.answering import rag_job_prepare
from inference.rag.ingest import document_ingest
from inference.tokens import local_count
from tests.conftest import TINY

pytestmark = [pytest.mark.django_db, pytest.mark.model]

# Classical Chinese about lanterns on a river, several times: about one
# SmolLM2 token per byte, three bytes a character.
CHINESE = "河上放燈 千燈隨水而去 夜色如晝。燈節之時 城中百姓皆出觀之。" * 30


@pytest.fixture
def lanterns(handbook: KnowledgeBase) -> Contender:
    outcome = document_ingest(knowledge_base=handbook, source="lanterns.md", data=CHINESE.encode())
    assert not outcome.failed, outcome
    return Contender.objects.create(
        name="lantern-docs",
        engine=Engine.LOCAL,
        params=TINY,
        knowledge_base=handbook,
        rag_k=3,
        # Room for the question, the estimated passages and a short answer;
        # not for three passages of Chinese.
        context_window=900,
    )


def test_passages_longer_than_estimated_give_way_so_the_request_fits_the_window(
    lanterns: Contender, alpha: Contender, alice: str
) -> None:
    battle = services.battle_create(
        session_key=alice, mode="named", contender_a="lantern-docs", contender_b="alpha"
    )
    answers = services.turn_create(battle_id=battle.pk, session_key=alice, text="河上何時放燈")
    rag_answer = next(a for a in answers if a.contender_id == lanterns.pk)
    job = answer_claim(answer_id=rag_answer.pk)
    assert job is not None and job.rag is not None

    fitted = rag_job_prepare(job)

    prompt = local_count(fitted.request.messages)
    assert prompt + fitted.request.max_tokens <= lanterns.context_window
    saved = Answer.objects.get(pk=rag_answer.pk)
    assert saved.passages is not None
    assert 0 < len(saved.passages) < 3, len(saved.passages)
    assert saved.messages == fitted.request.messages
