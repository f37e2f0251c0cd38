"""Retrieval on a small labelled set: each question's right passage is in
the top 3; BM25 finds rare exact words; thresholds; the cache follows ingests."""

from __future__ import annotations

import pytest

from inference.models import KnowledgeBase
from inference.rag.embeddings import embed_query
from inference.rag.ingest import document_ingest, knowledge_base_get_or_create
from inference.rag.retrieval import cache, passages_retrieve, passages_retrieve_by_vector

pytestmark = pytest.mark.django_db

DOCUMENTS = {
    "volcanoes.md": "# Volcanoes\n\nMagma rises through the crust and erupts as lava, ash "
    "and gas. Mount Etna in Sicily is one of the most active volcanoes in Europe.",
    "bread.md": "# Baking bread\n\nSourdough bread rises thanks to a starter of wild yeast "
    "and lactic bacteria; knead the dough, let it prove overnight, bake at 230 degrees.",
    "tides.md": "# Tides\n\nOcean tides are caused by the gravitational pull of the Moon and "
    "the Sun; most coasts see two high tides and two low tides every day.",
    "bees.md": "# Honeybees\n\nWorker bees perform a waggle dance to tell the hive the "
    "direction and distance of flowers rich in nectar.",
    "chess.md": "# Chess openings\n\nThe Sicilian Defence answers 1.e4 with c5; it leads to "
    "sharp, unbalanced positions and is Black's most popular reply.",
    "vaccines.md": "# Vaccines\n\nA vaccine trains the immune system to recognise a pathogen, "
    "so that antibodies and memory cells are ready before a real infection.",
    "bicycles.md": "# Bicycle maintenance\n\nTo fix a flat tyre, remove the wheel, lever the "
    "tyre off the rim, patch the inner tube and pump it back to pressure.",
    "taxes.md": "# Income tax\n\nIncome tax returns are due by the end of April; keep receipts "
    "for deductible expenses such as charitable donations.",
    "python.md": "# Python lists\n\nA Python list is a mutable sequence; append adds an item "
    "at the end and sort orders the items in place.",
    "coffee.md": "# Espresso\n\nEspresso is brewed by forcing hot water at nine bars of "
    "pressure through finely ground coffee for about 25 seconds.",
    "whales.md": "# Blue whales\n\nThe blue whale is the largest animal ever known; it "
    "feeds almost only on krill, filtering tonnes of it through baleen plates.",
    "passwords.md": "# Account security\n\nTo reset your password, open Settings, choose "
    "Security and click 'Forgot password'; a reset link is emailed to you.",
    "parts.md": "# Spare parts\n\nThe replacement hinge for the cabinet door is part number "
    "ZX-4471-Q, sold separately from the handle.",
}

QUESTIONS = {
    "Why do volcanoes erupt?": "volcanoes.md",
    "How long should sourdough prove?": "bread.md",
    "What causes the tides in the sea?": "tides.md",
    "How do bees tell each other where the flowers are?": "bees.md",
    "What is a good reply to e4 for black?": "chess.md",
    "How does vaccination protect against disease?": "vaccines.md",
    "How do I repair a puncture on my bike?": "bicycles.md",
    "When do I have to file my tax return?": "taxes.md",
    "How can I add an element to a list in Python?": "python.md",
    "How is an espresso made?": "coffee.md",
    "What does the biggest animal on earth eat?": "whales.md",
    "I forgot my login, how do I get back in?": "passwords.md",
}


@pytest.fixture
def library(handbook: KnowledgeBase) -> KnowledgeBase:
    for source, text in DOCUMENTS.items():
        document_ingest(knowledge_base=handbook, source=source, data=text.encode())
    handbook.refresh_from_db()
    return handbook


@pytest.mark.parametrize(("question", "answer"), QUESTIONS.items())
def test_the_right_passage_is_in_the_top_three(
    library: KnowledgeBase, question: str, answer: str
) -> None:
    passages = passages_retrieve(knowledge_base=library, query=question, k=3)
    assert answer in [p.source for p in passages]


def test_the_right_passage_comes_first_for_most_questions(library: KnowledgeBase) -> None:
    first = [
        passages_retrieve(knowledge_base=library.pk, query=q, k=1)[0].source == answer
        for q, answer in QUESTIONS.items()
    ]
    assert sum(first) >= len(QUESTIONS) - 1


def test_bm25_alone_finds_an_exact_rare_keyword(library: KnowledgeBase) -> None:
    passages = passages_retrieve(knowledge_base=library, query="ZX-4471-Q", k=1, mode="lexical")
    assert passages[0].source == "parts.md"
    hybrid = passages_retrieve(knowledge_base=library, query="ZX-4471-Q", k=1)
    assert hybrid[0].source == "parts.md"


def test_a_passage_says_where_it_comes_from(library: KnowledgeBase) -> None:
    [passage] = passages_retrieve(knowledge_base=library, query="blue whale krill", k=1)
    payload = passage.as_json()
    assert set(payload) == {"chunk", "document", "source", "section", "text", "score", "similarity"}
    assert payload["document"] == "Blue whales"
    assert payload["source"] == "whales.md"
    assert "krill" in str(payload["text"])
    assert 0 < passage.similarity <= 1
    assert passage.score == pytest.approx(2 / 61, abs=1e-3)  # first in both lists


def test_a_threshold_leaves_out_weak_passages(library: KnowledgeBase) -> None:
    question = "How is an espresso made?"
    everything = passages_retrieve(knowledge_base=library, query=question, k=10)
    assert len(everything) == 10
    strict = passages_retrieve(knowledge_base=library, query=question, k=10, threshold=0.4)
    assert [p.source for p in strict] == ["coffee.md"]
    assert all(p.similarity >= 0.4 for p in strict)


def test_the_knowledge_base_threshold_applies_by_default(library: KnowledgeBase) -> None:
    library.score_threshold = 0.99
    library.save()
    assert passages_retrieve(knowledge_base=library, query="espresso", k=5) == []


def test_the_cache_follows_a_re_ingest(library: KnowledgeBase) -> None:
    question = "What is the part number of the cabinet hinge?"
    assert "ZX-4471-Q" in passages_retrieve(knowledge_base=library, query=question, k=1)[0].text
    built = cache.get(library.pk)
    changed = DOCUMENTS["parts.md"].replace("ZX-4471-Q", "QQ-9000-B")
    document_ingest(knowledge_base=library, source="parts.md", data=changed.encode())
    [passage] = passages_retrieve(knowledge_base=library, query=question, k=1)
    assert "QQ-9000-B" in passage.text
    assert cache.get(library.pk) is not built


def test_the_cache_is_reused_while_nothing_changes(library: KnowledgeBase) -> None:
    passages_retrieve(knowledge_base=library, query="tides", k=1)
    built = cache.get(library.pk)
    passages_retrieve(knowledge_base=library, query="bees", k=1)
    assert cache.get(library.pk) is built


def test_an_empty_knowledge_base_retrieves_nothing(handbook: KnowledgeBase) -> None:
    assert passages_retrieve(knowledge_base=handbook, query="anything at all") == []


def test_the_default_k_is_the_knowledge_base_top_k(library: KnowledgeBase) -> None:
    assert len(passages_retrieve(knowledge_base=library, query="science")) == library.top_k


def test_a_vector_of_another_size_is_refused_clearly(library: KnowledgeBase) -> None:
    import numpy as np

    with pytest.raises(ValueError, match="another model"):
        passages_retrieve_by_vector(
            knowledge_base=library, query="x", vector=np.ones(10, np.float32)
        )


def test_a_precomputed_vector_gives_the_same_passages(library: KnowledgeBase) -> None:
    question = "What causes the tides in the sea?"
    by_text = passages_retrieve(knowledge_base=library, query=question, k=3)
    by_vector = passages_retrieve_by_vector(
        knowledge_base=library, query=question, vector=embed_query(question), k=3
    )
    assert by_text == by_vector


def test_two_knowledge_bases_do_not_mix(library: KnowledgeBase) -> None:
    other, _ = knowledge_base_get_or_create(name="other")
    document_ingest(knowledge_base=other, source="x.md", data=b"# Other\n\nEspresso is tea.")
    sources = {p.source for p in passages_retrieve(knowledge_base=other, query="espresso", k=5)}
    assert sources == {"x.md"}
