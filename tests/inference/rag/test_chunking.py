"""Splitting documents: structure first (sections, paragraphs), then size,
with overlap inside long paragraphs."""

from __future__ import annotations

import itertools
import time

from inference.rag.chunking import chunk_blocks
from inference.rag.extract import Block, extract


def test_sections_are_never_mixed_and_carry_their_path() -> None:
    doc = extract(
        "guide.md", b"# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n### Offline\n\nNo net."
    )
    chunks = chunk_blocks(title=doc.title, blocks=doc.blocks, chunk_size=500, overlap=50)
    assert [(c.section, c.text) for c in chunks] == [
        ("", "Intro."),
        ("Install", "Run it."),
        ("Install \u203a Offline", "No net."),
    ]
    assert chunks[2].embed_text == "Guide \u203a Install \u203a Offline\n\nNo net."


def test_small_paragraphs_of_a_section_are_merged_up_to_the_size() -> None:
    text = "\n\n".join(f"Paragraph {i} is short." for i in range(10))
    chunks = chunk_blocks(title="T", blocks=[Block((), text)], chunk_size=100, overlap=20)
    assert len(chunks) == 3
    assert all(len(c.text) <= 100 for c in chunks)
    assert chunks[0].text.startswith("Paragraph 0 is short.\n\nParagraph 1 is short.")
    # Paragraph boundaries need no overlap: every paragraph appears once.
    assert sum(c.text.count("Paragraph") for c in chunks) == 10


def test_a_long_paragraph_is_split_at_sentences_with_the_overlap_repeated() -> None:
    sentences = [f"Sentence {i} talks about topic {i}." for i in range(60)]
    paragraph = " ".join(sentences)
    chunks = chunk_blocks(title="T", blocks=[Block((), paragraph)], chunk_size=300, overlap=80)
    assert len(chunks) > 5
    for before, after in itertools.pairwise(chunks):
        assert len(after.text) <= 300
        assert after.text[0].isupper()  # starts at a sentence
        shared = _shared(before.text, after.text)
        assert 0 < len(shared) <= 80
    assert all(any(s in c.text for c in chunks) for s in sentences)


def test_a_code_fence_with_blank_lines_stays_whole() -> None:
    code = "```python\ndef f():\n    return 1\n\n\ndef g():\n    return 2\n```"
    doc = extract("code.md", f"# Code\n\nBefore.\n\n{code}\n\nAfter.".encode())
    chunks = chunk_blocks(title=doc.title, blocks=doc.blocks, chunk_size=60, overlap=10)
    assert any(c.text == code for c in chunks)


def test_one_huge_paragraph_without_newlines_chunks_fast() -> None:
    words = ("alpha beta gamma delta epsilon zeta eta theta iota kappa " * 20_000).strip()
    assert len(words) > 1_000_000
    started = time.perf_counter()
    chunks = chunk_blocks(title="Huge", blocks=[Block((), words)], chunk_size=800, overlap=120)
    assert time.perf_counter() - started < 3
    assert len(chunks) > 1000
    assert all(len(c.text) <= 800 for c in chunks)


def test_text_without_any_spaces_is_cut_anywhere() -> None:
    chunks = chunk_blocks(title="T", blocks=[Block((), "x" * 2500)], chunk_size=1000, overlap=100)
    assert all(len(c.text) <= 1000 for c in chunks)
    assert sum(len(c.text) for c in chunks) >= 2500


def _shared(before: str, after: str) -> str:
    """The longest suffix of `before` that starts `after`."""
    for size in range(min(len(before), len(after)), 0, -1):
        if after.startswith(before[-size:]):
            return before[-size:]
    return ""
