"""RAG quality of answers: the triad by embeddings for every RAG answer, and
the grades of an LLM judge when the contender names one."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from django.db import transaction

from arena.models import Answer
from inference.engines import engine_for
from inference.engines.base import Message, TextDelta
from inference.models import Contender, RagScore
from inference.queues import JUDGE_TASK, work_start
from inference.rag.embeddings import embed_texts
from inference.rag.prompting import passages_format, query_from_messages
from inference.rag.triad import Triad, triad_score
from inference.selectors import contender_request, endpoint_config

log = logging.getLogger(__name__)

JUDGE_SYSTEM = (
    "You grade one answer of an assistant that answers from retrieved passages. "
    "Give three grades, each an integer from 0 (worst) to 10 (best):\n"
    "context_relevance: do the passages hold what the question needs?\n"
    "groundedness: is every claim of the answer supported by the passages?\n"
    "answer_relevance: does the answer address the question?\n"
    "Reply with exactly three lines, like:\n"
    "context_relevance: 7\ngroundedness: 4\nanswer_relevance: 9"
)
JUDGE_MAX_TOKENS = 48
_GRADE = {
    name: re.compile(rf"{name.replace('_', r'[_ ]')}\W*(\d{{1,2}})", re.IGNORECASE)
    for name in ("context_relevance", "groundedness", "answer_relevance")
}


def _question_of(answer: Answer) -> str:
    return query_from_messages(answer.messages, turns=1)


def answer_triad(answer: Answer) -> Triad:
    passages = [str(p.get("text", "")) for p in answer.passages or []]
    return triad_score(
        question=_question_of(answer), passages=passages, answer=answer.text, embed=embed_texts
    )


def answer_rag_score(*, answer_id: int) -> RagScore | None:
    """Score a finished RAG answer (idempotent: a second call rescores)."""
    answer = Answer.objects.select_related("contender").get(pk=answer_id)
    if answer.passages is None or answer.status not in Answer.VOTABLE or not answer.text:
        return None
    triad = answer_triad(answer)
    score, _ = RagScore.objects.update_or_create(
        answer=answer,
        defaults={
            "contender": answer.contender,
            "context_relevance": triad.context_relevance,
            "groundedness": triad.groundedness,
            "answer_relevance": triad.answer_relevance,
        },
    )
    return score


def judge_messages(answer: Answer) -> list[Message]:
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {
            "role": "user",
            "content": f"Question:\n{_question_of(answer)}\n\n"
            f"Passages:\n{passages_format(answer.passages or [])}\n\n"
            f"Answer:\n{answer.text}",
        },
    ]


def judge_parse(text: str) -> dict[str, float]:
    """The judge's three grades, scaled to [0, 1]; ValueError if any is missing."""
    grades: dict[str, float] = {}
    for name, pattern in _GRADE.items():
        match = pattern.search(text)
        if match is None or int(match.group(1)) > 10:
            raise ValueError(f"The judge gave no {name} grade from 0 to 10: {text[:200]!r}")
        grades[name] = int(match.group(1)) / 10
    return grades


async def _judge_text(judge: Contender, messages: list[Message]) -> str:
    endpoint = judge.endpoint
    engine = engine_for(judge.engine, endpoint_config(endpoint) if endpoint else None)
    params = {"temperature": 0.0, "max_tokens": JUDGE_MAX_TOKENS}
    request = contender_request(judge, messages=messages, params=params)
    parts = [e.text async for e in engine.stream(request) if isinstance(e, TextDelta)]
    return "".join(parts)


def answer_rag_judge(*, answer_id: int) -> RagScore | None:
    """Ask the contender's judge to grade a scored RAG answer; a judge that
    fails or answers off-format leaves its error on the score, not a crash."""
    score = (
        RagScore.objects.select_related("answer__contender__rag_judge__endpoint")
        .filter(answer_id=answer_id)
        .first()
    )
    if score is None:
        return None
    judge = score.answer.contender.rag_judge
    if judge is None:
        return score
    updates: dict[str, Any] = {"judge": judge, "judge_error": ""}
    try:
        text = asyncio.run(_judge_text(judge, judge_messages(score.answer)))
        grades = judge_parse(text)
        updates.update({f"judge_{name}": value for name, value in grades.items()})
    except Exception as exc:
        log.warning("the judge %s failed on answer %s: %s", judge, answer_id, exc)
        updates["judge_error"] = str(exc)[:1000]
    with transaction.atomic():
        RagScore.objects.filter(pk=score.pk).update(**updates)
    score.refresh_from_db()
    return score


def judge_start(*, answer_id: int, engine: str) -> None:
    """Queue an LLM judge's grading of a RAG answer on the judge's engine queue
    (from a worker or a generation thread: plain sync code)."""
    work_start(JUDGE_TASK, answer_rag_judge, engine=engine, answer_id=answer_id)
