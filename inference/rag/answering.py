"""The RAG steps of a generation: retrieve before the model runs, score after."""

from __future__ import annotations

import logging
from dataclasses import replace

from arena.services import GenerationJob, answer_passages_save
from inference.rag.prompting import messages_with_passages, query_from_messages
from inference.rag.retrieval import passages_retrieve

log = logging.getLogger(__name__)


def rag_job_prepare(job: GenerationJob) -> GenerationJob:
    """Retrieve passages for the conversation, save them and the messages that
    carry them on the answer, and return the job with those messages."""
    rag = job.rag
    if rag is None or not rag.retrieve:
        return job
    query = query_from_messages(job.request.messages)
    passages = [
        p.as_json()
        for p in passages_retrieve(knowledge_base=rag.knowledge_base_id, query=query, k=rag.k)
    ]
    messages = messages_with_passages(
        job.request.messages,
        passages=passages,
        template=rag.template,
        knowledge_base=rag.knowledge_base,
    )
    answer_passages_save(answer_id=job.answer_id, passages=passages, messages=messages)
    return replace(
        job, request=replace(job.request, messages=messages), rag=replace(rag, retrieve=False)
    )


def rag_answer_review(*, answer_id: int, judge_engine: str | None) -> None:
    """Score a finished RAG answer; hand it to the judge when there is one."""
    from inference.dispatch import judge_start
    from inference.rag.scoring import answer_rag_score

    score = answer_rag_score(answer_id=answer_id)
    if score is not None and judge_engine is not None:
        judge_start(answer_id=answer_id, engine=judge_engine)


def rag_preload() -> None:
    """Warm this process for RAG answers: the embedding model and the index of
    every knowledge base an enabled contender answers from (a first retrieval
    would otherwise pay both)."""
    from django.db import connection

    from inference.models import Contender
    from inference.rag.embeddings import embed_query

    try:
        kb_ids = set(
            Contender.objects.filter(enabled=True, knowledge_base__isnull=False).values_list(
                "knowledge_base_id", flat=True
            )
        )
        if not kb_ids:
            return
        embed_query("warm-up")
        for kb_id in kb_ids:
            passages_retrieve(knowledge_base=kb_id, query="warm-up", k=1)
    except Exception:  # not migrated yet, say: the first answer loads instead
        log.warning("RAG preload skipped", exc_info=True)
    finally:
        connection.close()
