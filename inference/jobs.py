"""What a generation runs: the job of a claimed answer.

The claim itself is the answer's state change, arena's
(arena.services.answer_start); the request, the endpoint and the RAG
settings it runs with are inference's, read from the contender at claim time.
"""

from __future__ import annotations

from dataclasses import dataclass

from arena.models import Answer
from arena.services import answer_start
from inference.engines.base import GenerationRequest
from inference.engines.openai import EndpointConfig
from inference.selectors import contender_request, endpoint_config


@dataclass(frozen=True)
class RagJob:
    knowledge_base_id: int
    knowledge_base: str
    template: str
    k: int | None
    retrieve: bool  # False: a regenerated answer keeps its turn's passages
    judge_engine: str | None = None  # the engine kind of the contender's LLM judge


@dataclass(frozen=True)
class GenerationJob:
    answer_id: int
    battle_id: str
    turn: int
    side: str
    attempt: int
    engine: str
    request: GenerationRequest
    # The OpenAI-compatible engine: the endpoint as configured at claim time.
    endpoint: EndpointConfig | None = None
    endpoint_id: int | None = None
    contender_id: int | None = None
    # RAG contenders: what to retrieve from, when the answer has no passages yet.
    rag: RagJob | None = None


def answer_claim(*, answer_id: int) -> GenerationJob | None:
    """Claim a pending answer for generation and say how to run it; None if
    someone else has it, or it was stopped or superseded meanwhile."""
    answer = answer_start(answer_id=answer_id)
    return None if answer is None else _job(answer)


def _job(answer: Answer) -> GenerationJob:
    contender = answer.contender
    kb = contender.knowledge_base
    endpoint = contender.endpoint
    request = contender_request(
        contender,
        messages=answer.messages,
        params=answer.params,
        passages_pending=kb is not None and answer.passages is None,
    )
    return GenerationJob(
        answer_id=answer.pk,
        battle_id=str(answer.turn.battle_id),
        turn=answer.turn.index,
        side=answer.side,
        attempt=answer.attempt,
        engine=contender.engine,
        request=request,
        endpoint=endpoint_config(endpoint) if endpoint is not None else None,
        endpoint_id=endpoint.pk if endpoint is not None else None,
        contender_id=contender.pk,
        rag=RagJob(
            knowledge_base_id=kb.pk,
            knowledge_base=kb.name,
            template=contender.rag_template,
            k=contender.rag_k,
            retrieve=answer.passages is None,
            judge_engine=contender.rag_judge.engine if contender.rag_judge else None,
        )
        if kb is not None
        else None,
    )
