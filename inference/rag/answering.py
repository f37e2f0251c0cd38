"""The RAG steps of a generation: retrieve before the model runs, score after."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from django.db import connection

from arena.services import answer_passages_save
from inference.engines.base import Message
from inference.jobs import GenerationJob
from inference.models import Contender
from inference.rag.embeddings import embed_query
from inference.rag.prompting import messages_with_passages, query_from_messages
from inference.rag.retrieval import passages_retrieve
from inference.rag.scoring import answer_rag_score, judge_start
from inference.tokens import max_tokens_fit, prompt_counter

# A RAG answer keeps room for at least this many tokens when its passages are
# fitted to the context window.
MIN_ANSWER_TOKENS = 16

log = logging.getLogger(__name__)


def messages_augment(
    messages: list[Message],
    *,
    knowledge_base_id: int,
    knowledge_base: str,
    template: str,
    k: int | None,
) -> tuple[list[dict[str, Any]], list[Message]]:
    """(passages, messages carrying them) for a conversation: what a RAG
    contender is given, in a battle and in the admin's test alike."""
    query = query_from_messages(messages)
    found = passages_retrieve(knowledge_base=knowledge_base_id, query=query, k=k)
    passages = [p.as_json() for p in found]
    with_passages = messages_with_passages(
        messages, passages=passages, template=template, knowledge_base=knowledge_base
    )
    return passages, with_passages


def rag_job_prepare(job: GenerationJob) -> GenerationJob:
    """Retrieve passages for the conversation, save them and the messages that
    carry them on the answer, and return the job with those messages, fitted
    to the contender's context window."""
    rag = job.rag
    if rag is None or not rag.retrieve:
        return job
    original = job.request.messages
    passages, messages = messages_augment(
        original,
        knowledge_base_id=rag.knowledge_base_id,
        knowledge_base=rag.knowledge_base,
        template=rag.template,
        k=rag.k,
    )
    if job.contender_id is None:
        answer_passages_save(answer_id=job.answer_id, passages=passages, messages=messages)
        return replace(
            job, request=replace(job.request, messages=messages), rag=replace(rag, retrieve=False)
        )
    contender = Contender.objects.get(pk=job.contender_id)
    count = prompt_counter(contender)
    window = contender.context_window
    # The room kept for passages was an estimate made when the message was
    # sent (three characters a token): passages that came out longer (CJK,
    # code) give way from the least relevant, so no request overflows.
    prompt_tokens = count(messages)
    while passages and prompt_tokens + MIN_ANSWER_TOKENS > window:
        passages = passages[:-1]
        messages = messages_with_passages(
            original, passages=passages, template=rag.template, knowledge_base=rag.knowledge_base
        )
        prompt_tokens = count(messages)
    answer_passages_save(answer_id=job.answer_id, passages=passages, messages=messages)
    max_tokens = max_tokens_fit(
        context_window=window, prompt_tokens=prompt_tokens, max_tokens=job.request.max_tokens
    )
    request = replace(job.request, messages=messages, max_tokens=max_tokens)
    return replace(job, request=request, rag=replace(rag, retrieve=False))


def rag_answer_review(*, answer_id: int, judge_engine: str | None) -> None:
    """Score a finished RAG answer; hand it to the judge when there is one."""
    score = answer_rag_score(answer_id=answer_id)
    if score is not None and judge_engine is not None:
        judge_start(answer_id=answer_id, engine=judge_engine)


def rag_preload() -> None:
    """Warm this process for RAG answers: the embedding model and the index of
    every knowledge base an enabled contender answers from (a first retrieval
    would otherwise pay both)."""
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
