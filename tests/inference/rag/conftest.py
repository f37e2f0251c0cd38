"""RAG fixtures: the real embedding model (loaded once per session) and
knowledge bases built through the real ingest service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inference.models import KnowledgeBase
from inference.rag import embeddings, retrieval
from inference.rag.ingest import knowledge_base_get_or_create


@pytest.fixture(scope="session")
def embedder() -> None:
    """The bundled all-MiniLM-L6-v2, loaded once for the whole run."""
    embeddings.model()


@pytest.fixture(autouse=True)
def _fresh_retrieval_cache() -> Iterator[None]:
    # Test databases roll back, so ids repeat from one test to the next.
    retrieval.cache.clear()
    yield
    retrieval.cache.clear()


@pytest.fixture
def handbook(db: None, embedder: None) -> KnowledgeBase:
    """An empty knowledge base called "handbook"."""
    kb, _ = knowledge_base_get_or_create(name="handbook", chunk_size=400, chunk_overlap=60)
    return kb
