"""The RAG triad, scored with the embedding model (as TruLens defines it):

- context relevance: how well the retrieved passages match the question;
- groundedness: the share of the answer's sentences that some passage supports;
- answer relevance: how well the answer matches the question.

Each is in [0, 1]. Cosine similarities of all-MiniLM-L6-v2 rarely go below
zero for English text; negatives are clipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Embed = Callable[[list[str]], np.ndarray]

# An answer sentence counts as supported when a passage sentence says nearly
# the same (cosine) or the passage holds most of its content words.
SUPPORT_COSINE = 0.6
SUPPORT_OVERLAP = 0.7
MIN_CLAIM_WORDS = 4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CITATION = re.compile(r"\[\d+(?:,\s*\d+)*\]")
_WORD = re.compile(r"\w+")
_STOP_WORDS = (
    "a an the and or but if of to in on at by for with from as is are was were be been being "
    "it its this that these those there here i you he she we they them his her our your their "
    "not no do does did so than then can could would should will may might must has have had "
    "what which who whom when where why how all any some such into about over under also just"
)
_STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True)
class Triad:
    context_relevance: float
    groundedness: float
    answer_relevance: float


def sentences_split(text: str) -> list[str]:
    """Sentences and list items of a text, citations removed."""
    parts = (_CITATION.sub("", p).strip(" \t-*•#>") for p in _SENTENCE_END.split(text))
    return [p.strip() for p in parts if p.strip()]


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def _overlap(claim: str, passages: Sequence[set[str]]) -> float:
    words = _content_words(claim)
    if not words:
        return 0.0
    return max((len(words & p) / len(words) for p in passages), default=0.0)


def triad_score(*, question: str, passages: Sequence[str], answer: str, embed: Embed) -> Triad:
    """The triad of one answer. `embed` returns L2-normalised rows."""
    claims = [s for s in sentences_split(answer) if len(_WORD.findall(s)) >= MIN_CLAIM_WORDS]
    evidence = [s for p in passages for s in sentences_split(p)] + list(passages)
    texts = [question, answer or " ", *passages, *claims, *evidence]
    vectors = embed(texts)
    q, a = vectors[0], vectors[1]
    at = 2
    p_vecs = vectors[at : at + len(passages)]
    at += len(passages)
    c_vecs = vectors[at : at + len(claims)]
    at += len(claims)
    e_vecs = vectors[at:]

    context = float(np.clip(p_vecs @ q, 0, 1).mean()) if len(passages) else 0.0
    relevance = float(np.clip(a @ q, 0, 1)) if answer.strip() else 0.0
    if not claims or not len(passages):
        grounded = 0.0
    else:
        best = (c_vecs @ e_vecs.T).max(axis=1)
        passage_words = [_content_words(p) for p in passages]
        supported = [
            bool(cos >= SUPPORT_COSINE or _overlap(claim, passage_words) >= SUPPORT_OVERLAP)
            for claim, cos in zip(claims, best, strict=True)
        ]
        grounded = sum(supported) / len(supported)
    return Triad(
        context_relevance=round(context, 4),
        groundedness=round(grounded, 4),
        answer_relevance=round(relevance, 4),
    )
