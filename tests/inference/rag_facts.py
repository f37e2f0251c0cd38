"""A small knowledge base of invented facts (no model can know them) for the
RAG battle, export and browser tests."""

from __future__ import annotations

from inference.models import KnowledgeBase

FACTS = {
    "zorblax.md": (
        "# Zorblax lantern festival\n\n"
        "The Zorblax lantern festival is held in Quentville every year on the second "
        "Saturday of April. Thousands of paper lanterns are released over the Quent river "
        "at dusk.\n\n"
        "## Food\n\n"
        "The traditional dish of the Zorblax festival is smoked eel with blackberry sauce, "
        "served on flat rye bread.\n"
    ),
    "glassworks.md": (
        "# Quentville glassworks\n\n"
        "The glassworks of Quentville were founded in 1742 by the Marrow family and still "
        "blow green bottle glass by hand. The canteen of the glassworks serves barley soup.\n"
    ),
    "tides.md": (
        "# Tides of the Quent estuary\n\n"
        "The Quent estuary has a tidal range of nine metres; its tidal bore arrives twice a "
        "day and surfers ride it for up to four kilometres.\n"
    ),
}


def facts_kb_make(name: str = "quentville") -> KnowledgeBase:
    from inference.rag.ingest import document_ingest, knowledge_base_get_or_create

    kb, _ = knowledge_base_get_or_create(name=name)
    for source, text in FACTS.items():
        outcome = document_ingest(knowledge_base=kb, source=source, data=text.encode())
        assert not outcome.failed, outcome
    kb.refresh_from_db()
    return kb
