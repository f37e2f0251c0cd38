"""Text out of uploaded or ingested files: bytes and a file name in, a title,
a kind and the document's blocks (each with its heading path) out.

Pure Python (plus pypdf); no Django. Every refusal is a `DocumentError` whose
message is meant for the person who gave the file.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath

KINDS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
SUPPORTED = tuple(sorted(KINDS))


class DocumentError(ValueError):
    """A file that cannot be ingested; the message says why, for users."""


@dataclass(frozen=True)
class Block:
    """A run of text under one heading path (outermost heading first)."""

    headings: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Extracted:
    title: str
    kind: str
    blocks: list[Block]


def kind_of(name: str) -> str:
    """The document kind for a file name; DocumentError for unsupported ones."""
    suffix = PurePath(name).suffix.lower()
    if suffix not in KINDS:
        shown = suffix or "no extension"
        raise DocumentError(
            f"{name}: unsupported file type ({shown}); supported: {', '.join(SUPPORTED)}"
        )
    return KINDS[suffix]


def extract(name: str, data: bytes, *, max_bytes: int | None = None) -> Extracted:
    """Parse `data` (the content of the file called `name`)."""
    kind = kind_of(name)
    if max_bytes is not None and len(data) > max_bytes:
        raise DocumentError(
            f"{name}: too large ({len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB)"
        )
    if kind == "pdf":
        title, blocks = _pdf(name, data)
    else:
        text = _decode(name, data)
        title, blocks = _PARSERS[kind](text)
    blocks = [b for b in blocks if b.text.strip()]
    if not blocks:
        raise DocumentError(f"{name}: empty document (no text in it)")
    return Extracted(title=title.strip() or _stem(name), kind=kind, blocks=blocks)


def _stem(name: str) -> str:
    return PurePath(name).stem


def _decode(name: str, data: bytes) -> str:
    if not data.strip():
        raise DocumentError(f"{name}: empty document")
    try:
        # utf-8-sig drops a byte-order mark that editors on Windows put first.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{name}: not UTF-8 text (bad byte at offset {exc.start}; try converting it to "
            "UTF-8, e.g. iconv -f latin1 -t utf-8)"
        ) from None
    if "\x00" in text:
        raise DocumentError(f"{name}: looks like a binary file, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- plain text ------------------------------------------------------------------


def _text(text: str) -> tuple[str, list[Block]]:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    # A short first line reads as a title; a long one is the first paragraph.
    title = first if len(first) <= 120 else ""
    return title, [Block((), text)]


# --- markdown --------------------------------------------------------------------

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _markdown(text: str) -> tuple[str, list[Block]]:
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    fence = ""
    title = ""

    def flush() -> None:
        if lines:
            blocks.append(Block(tuple(h for _, h in path), "\n".join(lines)))
            lines.clear()

    for line in text.split("\n"):
        opener = _FENCE.match(line)
        if fence:
            # Inside a fence a "#" line is code, not a heading.
            lines.append(line)
            if opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence):
                fence = ""
            continue
        if opener:
            fence = opener.group(1)
            lines.append(line)
            continue
        heading = _HEADING.match(line)
        if heading is None:
            lines.append(line)
            continue
        flush()
        level, name = len(heading.group(1)), heading.group(2).strip()
        if level == 1 and not title:
            title = name
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, name))
    flush()
    return title, _without_title(blocks, title)


def _without_title(blocks: list[Block], title: str) -> list[Block]:
    """The title is already every chunk's context: drop it from heading paths."""
    if not title:
        return blocks
    return [Block(b.headings[1:], b.text) if b.headings[:1] == (title,) else b for b in blocks]


# --- html ------------------------------------------------------------------------

_SKIP = {"script", "style", "nav", "noscript", "template", "svg", "head"}
_BREAKS = {
    "p", "div", "br", "li", "tr", "section", "article", "pre", "blockquote", "table",
    "ul", "ol", "dl", "dt", "dd", "header", "footer", "main", "aside", "figure", "hr",
}  # fmt: skip
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.first_h1 = ""
        self.blocks: list[Block] = []
        self._path: list[tuple[int, str]] = []
        self._text: list[str] = []
        self._skip = 0
        self._in_title = False
        self._heading: tuple[int, list[str]] | None = None
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIP:
            self._skip += 1
        elif tag in _HEADINGS and not self._skip:
            self._flush()
            self._heading = (_HEADINGS[tag], [])
        elif tag == "pre":
            self._pre += 1
            self._text.append("\n\n")
        elif tag in _BREAKS:
            self._text.append("\n\n" if tag in {"p", "div", "section", "article"} else "\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"br", "hr"} and not self._skip:
            self._text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _HEADINGS and self._heading is not None:
            level, parts = self._heading
            name = " ".join("".join(parts).split())
            self._heading = None
            if level == 1 and not self.first_h1:
                self.first_h1 = name
            while self._path and self._path[-1][0] >= level:
                self._path.pop()
            if name:
                self._path.append((level, name))
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._text.append("\n\n")
        elif tag in _BREAKS:
            self._text.append("\n\n" if tag in {"p", "div", "section", "article"} else "\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._skip:
            return
        if self._heading is not None:
            self._heading[1].append(data)
        elif self._pre:
            self._text.append(data)
        else:
            # Outside <pre>, HTML whitespace (newlines included) is one space.
            self._text.append(re.sub(r"\s+", " ", data))

    def _flush(self) -> None:
        text = "".join(self._text)
        self._text = []
        text = "\n".join(line.strip() if not self._pre else line for line in text.split("\n"))
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if text:
            self.blocks.append(Block(tuple(h for _, h in self._path), text))

    def close(self) -> None:
        super().close()
        self._flush()


def _html(text: str) -> tuple[str, list[Block]]:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    title = " ".join(parser.title.split()) or parser.first_h1
    return title, _without_title(parser.blocks, title)


# --- pdf -------------------------------------------------------------------------


def _pdf(name: str, data: bytes) -> tuple[str, list[Block]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not data.strip():
        raise DocumentError(f"{name}: empty document")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError(f"{name}: the PDF is encrypted (password-protected)")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta = reader.metadata
        title = str(meta.title or "") if meta else ""
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise DocumentError(f"{name}: not a readable PDF ({exc})") from None
    if not any(p.strip() for p in pages):
        raise DocumentError(f"{name}: the PDF has no text layer (scanned?); OCR it first")
    blocks = [Block((f"Page {i}",), p) for i, p in enumerate(pages, 1) if p.strip()]
    return title, blocks


_PARSERS = {"text": _text, "markdown": _markdown, "html": _html}
