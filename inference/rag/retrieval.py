"""Passages for a question: exact dense search fused with BM25.

Each process keeps, per knowledge base, the chunk embedding matrix and a BM25
index, keyed on the knowledge base's `revision`: one cheap query per call
says whether they are still current, and they are rebuilt only when it
changed. A question costs one matrix-vector product (exact cosine, no
approximate index to drift), a few sparse column reads, and one query for
the winning chunks' text.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse

from inference.models import Chunk, KnowledgeBase
from inference.rag.embeddings import embed_query

Mode = Literal["hybrid", "dense", "lexical"]
RRF_K = 60
BM25_K1 = 1.5
BM25_B = 0.75

_WORD = re.compile(r"\w+")
# A small list on purpose: BM25's idf already discounts common words, this
# only keeps them from matching every chunk of a short question.
STOPWORDS = frozenset(
    """a an and are as at be but by can do does for from had has have how i if in into is it
    its me my no not of on or our so than that the their them then there these they this to
    was we were what when where which who why will with you your""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Passage:
    chunk_id: int
    document: str  # the document's title, else its source
    source: str
    section: str
    text: str
    score: float  # the fused (reciprocal rank) score
    similarity: float  # cosine similarity to the question

    def as_json(self) -> dict[str, object]:
        return {
            "chunk": self.chunk_id,
            "document": self.document,
            "source": self.source,
            "section": self.section,
            "text": self.text,
            "score": round(self.score, 4),
            "similarity": round(self.similarity, 4),
        }


def tokens(text: str) -> list[str]:
    """Lowercased words without the commonest English ones."""
    return [t for t in _WORD.findall(text.lower()) if t not in STOPWORDS]


# --- the per-process index -----------------------------------------------------------


class BM25:
    """Okapi BM25 over a term-document matrix stored by term (CSC): column t
    holds every chunk's precomputed weight for term t, so a question reads
    one column per word it has."""

    def __init__(self, documents: list[str]) -> None:
        vocabulary: dict[str, int] = {}
        term_ids: list[int] = []
        lengths = np.zeros(len(documents), np.int64)
        for row, text in enumerate(documents):
            words = tokens(text)
            lengths[row] = len(words)
            term_ids.extend(vocabulary.setdefault(w, len(vocabulary)) for w in words)
        rows = np.repeat(np.arange(len(documents), dtype=np.int32), lengths)
        counts = sparse.csc_matrix(
            (np.ones(len(term_ids), np.float32), (rows, np.asarray(term_ids, np.int32))),
            shape=(len(documents), max(len(vocabulary), 1)),
        )
        counts.sum_duplicates()
        self.vocabulary = vocabulary
        self.matrix = self._weights(counts, lengths)

    @staticmethod
    def _weights(counts: sparse.csc_matrix, lengths: np.ndarray) -> sparse.csc_matrix:
        n = counts.shape[0]
        average = float(lengths.mean()) if n and lengths.sum() else 1.0
        df = np.diff(counts.indptr)
        idf = np.log((n - df + 0.5) / (df + 0.5) + 1.0).astype(np.float32)
        tf = counts.data
        norm = (BM25_K1 * (1 - BM25_B + BM25_B * lengths / average)).astype(np.float32)
        term_of = np.repeat(np.arange(counts.shape[1]), df)
        counts.data = idf[term_of] * tf * (BM25_K1 + 1) / (tf + norm[counts.indices])
        return counts

    def scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows that contain a query word, their BM25 scores)."""
        columns = {self.vocabulary[w] for w in tokens(query) if w in self.vocabulary}
        if not columns:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        m = self.matrix
        rows = np.concatenate([m.indices[m.indptr[c] : m.indptr[c + 1]] for c in columns])
        weights = np.concatenate([m.data[m.indptr[c] : m.indptr[c + 1]] for c in columns])
        hit, inverse = np.unique(rows, return_inverse=True)
        return hit, np.bincount(inverse, weights=weights).astype(np.float32)


@dataclass(frozen=True)
class Index:
    # (revision, the knowledge base's creation time): a database restored or
    # rolled back can hand an id out twice, never with the same creation time.
    version: tuple[int, object]
    chunk_ids: np.ndarray  # int64 (n,)
    # (n, dimensions) half-precision torch tensor, rows L2-normalised. Half the
    # bytes of float32: the product with a question is bound by memory
    # bandwidth, and torch's half matrix-vector product runs about twice as
    # fast (bench/rag.py). Cosines lose ~1e-3, well below ranking differences.
    matrix: Any
    bm25: BM25
    built_seconds: float

    @property
    def size(self) -> int:
        return len(self.chunk_ids)


def index_build(kb_id: int, version: tuple[int, object]) -> Index:
    started = time.perf_counter()
    rows = (
        Chunk.objects.filter(knowledge_base_id=kb_id)
        .order_by("id")
        .values_list("id", "embedding", "section", "text", "document__title")
    )
    ids: list[int] = []
    vectors: list[bytes] = []
    texts: list[str] = []
    for chunk_id, embedding, section, text, title in rows.iterator(chunk_size=2000):
        ids.append(chunk_id)
        vectors.append(bytes(embedding))
        # Headings and titles are the words people ask with: match them too.
        texts.append(f"{title}\n{section}\n{text}")
    blob = b"".join(vectors)
    width = len(vectors[0]) // 4 if vectors else 0
    if any(len(v) != width * 4 for v in vectors):
        raise ValueError(f"knowledge base {kb_id} mixes embeddings of different sizes")
    matrix = np.frombuffer(blob, dtype="<f4").reshape(len(ids), width).astype(np.float32)
    return Index(
        version=version,
        chunk_ids=np.asarray(ids, np.int64),
        matrix=_torch().from_numpy(np.ascontiguousarray(matrix)).half(),
        bm25=BM25(texts),
        built_seconds=time.perf_counter() - started,
    )


class _Cache:
    def __init__(self) -> None:
        self._indexes: dict[int, Index] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, kb_id: int) -> Index | None:
        """The current index of the knowledge base, None if it is gone."""
        version = (
            KnowledgeBase.objects.filter(pk=kb_id).values_list("revision", "created_at").first()
        )
        if version is None:
            self._indexes.pop(kb_id, None)
            return None
        index = self._indexes.get(kb_id)
        if index is not None and index.version == version:
            return index
        with self._guard:
            lock = self._locks.setdefault(kb_id, threading.Lock())
        with lock:
            # Another thread may have built it while this one waited.
            index = self._indexes.get(kb_id)
            if index is None or index.version != version:
                index = index_build(kb_id, version)
                self._indexes[kb_id] = index
            return index

    def clear(self) -> None:
        self._indexes.clear()


cache = _Cache()


# --- questions -----------------------------------------------------------------------


def passages_retrieve(
    *,
    knowledge_base: KnowledgeBase | int,
    query: str,
    k: int | None = None,
    threshold: float | None = None,
    mode: Mode = "hybrid",
) -> list[Passage]:
    """The `k` passages (default: the knowledge base's top_k) that best answer
    `query`, best first; those below the cosine `threshold` (default: the
    knowledge base's score_threshold) left out."""
    if not query.strip():
        return []
    return passages_retrieve_by_vector(
        knowledge_base=knowledge_base,
        query=query,
        vector=embed_query(query),
        k=k,
        threshold=threshold,
        mode=mode,
    )


def passages_retrieve_by_vector(
    *,
    knowledge_base: KnowledgeBase | int,
    query: str,
    vector: np.ndarray,
    k: int | None = None,
    threshold: float | None = None,
    mode: Mode = "hybrid",
) -> list[Passage]:
    """passages_retrieve with the question already embedded."""
    kb = _settings(knowledge_base)
    if kb is None:
        return []
    kb_id, top_k, kb_threshold = kb
    index = cache.get(kb_id)
    if index is None or index.size == 0:
        return []
    k = k or top_k
    threshold = kb_threshold if threshold is None else threshold
    rows, fused, similarity = ranked(index, query, vector, k=k, threshold=threshold, mode=mode)
    return _passages(index, rows, fused, similarity)


def _settings(knowledge_base: KnowledgeBase | int) -> tuple[int, int, float | None] | None:
    if isinstance(knowledge_base, KnowledgeBase):
        kb = knowledge_base
        return kb.pk, kb.top_k, kb.score_threshold
    found = (
        KnowledgeBase.objects.filter(pk=knowledge_base)
        .values_list("pk", "top_k", "score_threshold")
        .first()
    )
    return found


def ranked(
    index: Index,
    query: str,
    vector: np.ndarray,
    *,
    k: int,
    threshold: float | None = None,
    mode: Mode = "hybrid",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows of the index, fused scores, cosine similarities), best first, at most k."""
    query_vector = np.asarray(vector, np.float32).reshape(-1)
    if query_vector.shape[0] != index.matrix.shape[1]:
        raise ValueError(
            f"the question's embedding has {query_vector.shape[0]} values, the knowledge "
            f"base's {index.matrix.shape[1]}: it was embedded with another model"
        )
    depth = max(50, 5 * k)
    lists = []
    dense = _cosines(index, query_vector) if mode != "lexical" else None
    if dense is not None:
        lists.append(_top(np.arange(index.size), dense, depth))
    if mode != "dense":
        hit, scores = index.bm25.scores(query)
        lists.append(_top(hit, scores, depth))
    candidates, fused = _rrf(lists)
    if dense is not None:
        similarity = dense[candidates]
    else:
        similarity = _cosines(index, query_vector, candidates)
    if threshold is not None:
        keep = similarity >= threshold
        candidates, fused, similarity = candidates[keep], fused[keep], similarity[keep]
    return candidates[:k], fused[:k], similarity[:k]


def _torch() -> Any:
    import torch  # not at import time: the web process may never retrieve

    return torch


def _cosines(index: Index, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """float32 cosines of the question with all chunks, or with `rows`."""
    torch = _torch()
    matrix = index.matrix if rows is None else index.matrix[torch.from_numpy(rows)]
    product = torch.mv(matrix, torch.from_numpy(np.ascontiguousarray(query)).half())
    return product.float().numpy()


def _top(rows: np.ndarray, scores: np.ndarray, depth: int) -> np.ndarray:
    """The rows of the `depth` highest scores, best first."""
    if len(scores) > depth:
        part = np.argpartition(-scores, depth - 1)[:depth]
    else:
        part = np.arange(len(scores))
    return rows[part[np.argsort(-scores[part], kind="stable")]]


def _rrf(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion: each list adds 1 / (60 + rank) to its rows."""
    if not lists or not any(len(r) for r in lists):
        return np.empty(0, np.int64), np.empty(0, np.float64)
    rows = np.concatenate(lists)
    ranks = np.concatenate([np.arange(1, len(r) + 1) for r in lists])
    unique, inverse = np.unique(rows, return_inverse=True)
    fused = np.bincount(inverse, weights=1.0 / (RRF_K + ranks))
    # Ties (a row first in one list only vs. another first in the other) keep
    # the dense order, which comes first in `rows`.
    first_seen = np.full(len(unique), len(rows))
    np.minimum.at(first_seen, inverse, np.arange(len(rows)))
    order = np.lexsort((first_seen, -fused))
    return unique[order], fused[order]


def _passages(
    index: Index, rows: np.ndarray, fused: np.ndarray, similarity: np.ndarray
) -> list[Passage]:
    ids = [int(i) for i in index.chunk_ids[rows]]
    found = {
        c["id"]: c
        for c in Chunk.objects.filter(id__in=ids).values(
            "id", "section", "text", "document__title", "document__source"
        )
    }
    out = []
    for chunk_id, score, sim in zip(ids, fused, similarity, strict=True):
        chunk = found.get(chunk_id)
        if chunk is None:  # replaced by an ingest since the index was read
            continue
        out.append(
            Passage(
                chunk_id=chunk_id,
                document=chunk["document__title"] or chunk["document__source"],
                source=chunk["document__source"],
                section=chunk["section"],
                text=chunk["text"],
                score=float(score),
                similarity=float(sim),
            )
        )
    return out
