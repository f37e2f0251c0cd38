"""The RAG triad on the real embedding model, the judge's reply parser, and
how passages reach the prompt."""

from __future__ import annotations

import pytest

from inference.engines.base import Message
from inference.rag.embeddings import embed_texts
from inference.rag.prompting import (
    DEFAULT_TEMPLATE,
    NO_PASSAGES,
    messages_with_passages,
    query_from_messages,
)
from inference.rag.scoring import judge_parse
from inference.rag.triad import sentences_split, triad_score

QUESTION = "When is the Zorblax lantern festival held in Quentville?"
PASSAGES = [
    "The Zorblax lantern festival is held in Quentville every year on the second Saturday "
    "of April. Thousands of paper lanterns are released over the Quent river at dusk.",
    "Quentville is a small river town known for its glassworks. Its mayor is elected every "
    "four years.",
]
GROUNDED = (
    "The Zorblax lantern festival takes place on the second Saturday of April in Quentville "
    "[1]. Paper lanterns are released over the Quent river at dusk."
)
INVENTED = (
    "The festival is held in midwinter, usually in the first week of December. Visitors "
    "bring drums and dance around bonfires until sunrise. It was founded by Roman soldiers."
)
OFF_TOPIC = "Python is a programming language that emphasises readability and simple syntax."
UNRELATED = [
    "Bananas are rich in potassium and grow in tropical climates.",
    "The stock market fell three percent on Tuesday amid inflation fears.",
]


def _triad(passages: list[str], answer: str) -> tuple[float, float, float]:
    t = triad_score(question=QUESTION, passages=passages, answer=answer, embed=embed_texts)
    return t.context_relevance, t.groundedness, t.answer_relevance


def test_a_grounded_answer_scores_above_an_invented_one() -> None:
    _, grounded, relevant = _triad(PASSAGES, GROUNDED)
    _, invented, _ = _triad(PASSAGES, INVENTED)
    assert grounded == 1.0
    assert invented < 0.5 < grounded
    assert relevant > 0.7


def test_relevant_passages_score_above_unrelated_ones() -> None:
    relevant, _, _ = _triad(PASSAGES, GROUNDED)
    unrelated, grounded_in_unrelated, _ = _triad(UNRELATED, GROUNDED)
    assert relevant > unrelated + 0.3
    assert grounded_in_unrelated == 0.0


def test_an_answer_on_the_question_scores_above_one_beside_it() -> None:
    *_, on_topic = _triad(PASSAGES, GROUNDED)
    *_, off_topic = _triad(PASSAGES, OFF_TOPIC)
    assert on_topic > off_topic + 0.4


def test_no_passages_or_no_answer_score_zero_where_it_applies() -> None:
    assert _triad([], GROUNDED)[:2] == (0.0, 0.0)
    assert _triad(PASSAGES, "")[1:] == (0.0, 0.0)


def test_sentences_are_split_and_citations_dropped() -> None:
    text = "First claim [1]. Second one [2, 3]!\n- a list item\nDone?"
    assert sentences_split(text) == ["First claim .", "Second one !", "a list item", "Done?"]


def test_the_judges_grades_are_parsed_and_scaled() -> None:
    reply = "Context relevance: 7\nGroundedness - 10\nanswer_relevance: 0"
    assert judge_parse(reply) == {
        "context_relevance": 0.7,
        "groundedness": 1.0,
        "answer_relevance": 0.0,
    }


@pytest.mark.parametrize(
    "reply",
    ["I think the answer is good.", "context_relevance: 7\ngroundedness: 11\nanswer_relevance: 3"],
)
def test_a_judge_reply_off_format_is_refused(reply: str) -> None:
    with pytest.raises(ValueError, match="The judge gave no"):
        judge_parse(reply)


def test_the_query_is_the_last_user_messages_newest_last() -> None:
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "four"},
    ]
    assert query_from_messages(messages) == "two\nthree\nfour"
    assert query_from_messages(messages, turns=1) == "four"


def test_passages_join_the_contenders_system_prompt() -> None:
    passages = [{"document": "Guide", "section": "Setup", "text": "Run make run."}]
    with_system = messages_with_passages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How?"}],
        passages=passages,
        template="",
        knowledge_base="docs",
    )
    assert [m["role"] for m in with_system] == ["system", "user"]
    assert with_system[0]["content"].startswith("Be brief.\n\n")
    assert "[1] Guide \u203a Setup\nRun make run." in with_system[0]["content"]
    assert '"docs"' in with_system[0]["content"]
    without = messages_with_passages(
        [{"role": "user", "content": "How?"}],
        passages=[],
        template="Context: {passages} {unknown}",
        knowledge_base="docs",
    )
    assert without[0] == {"role": "system", "content": f"Context: {NO_PASSAGES} {{unknown}}"}
    assert "{passages}" in DEFAULT_TEMPLATE
