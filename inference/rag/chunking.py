"""Documents into passages: structure first, then size.

Sections (heading paths) are never mixed in one chunk. Inside a section,
paragraphs are the units; small adjacent ones are merged up to `chunk_size`,
and a paragraph longer than that is split at line, then sentence, then word
boundaries (then, for text with no spaces at all, anywhere). When a split
falls inside a paragraph, the next chunk repeats up to `overlap` characters
of the previous one, so a sentence cut in two is whole in at least one.

Pure: no Django. Linear in the text, so one 1 MB paragraph chunks in well
under a second.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from inference.rag.extract import Block

SEPARATOR = " \u203a "  # a single right-pointing angle quotation mark
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[\u3002\uff01\uff1f])")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Passage:
    """One chunk to store: `text` is shown to people and models; `embed_text`
    (the title and section path, then the text) is what gets embedded, so a
    passage that never names its subject still lands near questions about it."""

    index: int
    section: str
    text: str
    context: str

    @property
    def embed_text(self) -> str:
        return f"{self.context}\n\n{self.text}" if self.context else self.text


@dataclass(frozen=True)
class _Atom:
    text: str
    joiner: str  # what goes between it and the atom before: "\n\n" starts a paragraph

    @property
    def starts_paragraph(self) -> bool:
        return self.joiner == "\n\n"


def chunk_blocks(
    *, title: str, blocks: Sequence[Block], chunk_size: int = 800, overlap: int = 120
) -> list[Passage]:
    """Split a document's blocks into passages of at most `chunk_size` characters."""
    if chunk_size < 20:
        raise ValueError("chunk_size must be at least 20 characters")
    if not 0 <= overlap < chunk_size:
        raise ValueError("overlap must be at least 0 and below chunk_size")
    out: list[Passage] = []
    for headings, texts in _sections(blocks):
        section = SEPARATOR.join(headings)
        context = SEPARATOR.join([p for p in (title, *headings) if p])
        atoms = (a for text in texts for a in _atoms(text, chunk_size))
        for text in _pack(atoms, chunk_size, overlap):
            out.append(Passage(len(out), section, text, context))
    return out


def _sections(blocks: Sequence[Block]) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """Consecutive blocks under the same headings, together."""
    current: tuple[str, ...] | None = None
    texts: list[str] = []
    for block in blocks:
        if block.headings != current and texts:
            yield current or (), texts
            texts = []
        current = block.headings
        texts.append(block.text)
    if texts:
        yield current or (), texts


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; a fenced code block stays one paragraph
    even when it has blank lines in it."""
    if "```" not in text and "~~~" not in text:
        parts = _PARAGRAPH_BREAK.split(text)
    else:
        parts, lines, fence = [], [], ""
        for line in text.split("\n"):
            opener = _FENCE.match(line)
            if fence:
                lines.append(line)
                if opener and opener.group(1)[0] == fence[0]:
                    fence = ""
            elif opener:
                fence = opener.group(1)
                lines.append(line)
            elif line.strip():
                lines.append(line)
            elif lines:
                parts.append("\n".join(lines))
                lines = []
        parts.append("\n".join(lines))
    return [p.strip("\n").rstrip() for p in parts if p.strip()]


def _atoms(text: str, size: int) -> Iterator[_Atom]:
    for paragraph in paragraphs(text):
        joiner = "\n\n"
        for piece, inner in _split(paragraph, size, 0):
            yield _Atom(piece, joiner)
            joiner = inner


# How a too-long paragraph is cut, coarsest first: (pattern, joiner put back).
_LEVELS: list[tuple[re.Pattern[str] | None, str]] = [
    (re.compile(r"\n"), "\n"),
    (_SENTENCE_END, " "),
    (_WHITESPACE, " "),
    (None, ""),
]


def _split(text: str, size: int, level: int) -> Iterator[tuple[str, str]]:
    """(piece, joiner to the next piece) with every piece at most `size` long."""
    if len(text) <= size:
        yield text, " "
        return
    pattern, joiner = _LEVELS[level]
    if pattern is None:
        for start in range(0, len(text), size):
            yield text[start : start + size], ""
        return
    parts = [p for p in pattern.split(text) if p.strip()]
    if len(parts) <= 1:
        yield from _split(text, size, level + 1)
        return
    for part in parts:
        pieces = list(_split(part.strip() if joiner == " " else part, size, level + 1))
        for i, (piece, inner) in enumerate(pieces):
            yield piece, inner if i < len(pieces) - 1 else joiner


def _pack(atoms: Iterable[_Atom], size: int, overlap: int) -> Iterator[str]:
    """Greedily fill chunks up to `size`; carry an overlap into a chunk that
    starts mid-paragraph."""
    parts: list[str] = []
    length = 0
    for atom in atoms:
        if parts and length + len(atom.joiner) + len(atom.text) > size:
            previous = "".join(parts)
            yield previous
            parts, length = [], 0
            if overlap and not atom.starts_paragraph:
                room = size - len(atom.text) - len(atom.joiner)
                tail = _tail(previous, min(overlap, room))
                if tail:
                    parts, length = [tail], len(tail)
        if parts:
            parts.append(atom.joiner)
            length += len(atom.joiner)
        parts.append(atom.text)
        length += len(atom.text)
    if parts:
        yield "".join(parts)


def _tail(text: str, limit: int) -> str:
    """The last `limit` characters or fewer, starting at a sentence boundary
    when there is one in reach, else at a word boundary."""
    if limit <= 0:
        return ""
    tail = text[-limit:]
    sentence = _SENTENCE_END.search(tail)
    if sentence and sentence.end() < len(tail):
        return tail[sentence.end() :].strip()
    if len(tail) < len(text) and not text[-limit - 1].isspace():
        cut = _WHITESPACE.search(tail)
        # Text without spaces has no boundary to respect: keep the raw tail.
        tail = tail[cut.end() :] if cut else tail
    return tail.strip()
